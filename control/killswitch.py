"""Setting and clearing kill switches: what `strangler kill`, the dashboard and the guardrail
monitor call. Light on purpose (no rules parsing): `strangler kill` loads this, the store and
nothing of the data plane.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from control.decision import GLOBAL_SCOPE
from control.errors import ControlError
from control.store import AuditEntry, ControlStore, KillSwitch

log = logging.getLogger("strangler.control")


def kill(
    store: ControlStore, funnel: str | None, *, actor: str, reason: str,
    evidence: dict[str, Any] | None = None,
) -> KillSwitch:
    if not reason.strip():
        raise ControlError("a reason is required")
    scope = funnel or GLOBAL_SCOPE
    switch = KillSwitch(scope, reason, actor, time.time(), evidence)
    details = {"evidence": evidence} if evidence else {}
    store.set_kill(switch, AuditEntry(switch.at, actor, "kill", scope, reason, details))
    log.warning("kill switch %s set by %s: %s", scope, actor, reason)
    return switch


def unkill(
    store: ControlStore, funnel: str | None, *, actor: str, reason: str,
) -> KillSwitch | None:
    if not reason.strip():
        raise ControlError("a reason is required")
    scope = funnel or GLOBAL_SCOPE
    now = time.time()
    previous = store.clear_kill(scope, AuditEntry(now, actor, "unkill", scope, reason))
    store.set_meta(f"unkilled_at:{scope}", repr(now))  # guardrails judge afresh from here
    log.warning("kill switch %s cleared by %s: %s", scope, actor, reason)
    return previous
