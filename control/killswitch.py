"""Setting and clearing kill switches: what `strangler kill`, the dashboard and the guardrail
monitor call. Light on purpose (no rules parser): `strangler kill` loads this, the store and
nothing of the data plane.

A command that says it did something has done it: a kill names a funnel of the active rules
(exactly; a near miss gets a "did you mean"), or no funnel for the global switch; an unkill
names a switch that is set. Anything else raises ControlError before the store is written.
"""

from __future__ import annotations

import difflib
import logging
import time
from typing import Any

import yaml

from control.decision import GLOBAL_SCOPE
from control.errors import ControlError
from control.store import AuditEntry, ControlStore, KillSwitch

log = logging.getLogger("strangler.control")


def funnel_names(store: ControlStore) -> list[str]:
    """The funnels of the active rules (names only: no validation of the rest)."""
    active = store.active_rules()
    if active is None:
        return []
    data = yaml.safe_load(active.text)
    funnels = data.get("funnels") if isinstance(data, dict) else None
    return [str(f["name"]) for f in funnels or [] if isinstance(f, dict) and "name" in f]


def _scope(funnel: str | None) -> str:
    if funnel is None:
        return GLOBAL_SCOPE
    if not funnel.strip():
        raise ControlError("--funnel must name a funnel; for the global switch leave --funnel "
                           "out (or pass --global)")
    return funnel


def _unknown(funnel: str, known: list[str]) -> ControlError:
    by_case = {k.lower(): k for k in known}
    close = difflib.get_close_matches(funnel, known, n=1, cutoff=0.6) or (
        [by_case[funnel.strip().lower()]] if funnel.strip().lower() in by_case else [])
    hint = f"; did you mean {close[0]!r}?" if close else ""
    names = ", ".join(known) if known else "none: no rules are active"
    return ControlError(f"no funnel named {funnel!r} in the active rules{hint} "
                        f"(funnels: {names})")


def kill(
    store: ControlStore, funnel: str | None, *, actor: str, reason: str,
    evidence: dict[str, Any] | None = None,
) -> KillSwitch:
    if not reason.strip():
        raise ControlError("a reason is required")
    scope = _scope(funnel)
    if scope != GLOBAL_SCOPE:
        known = funnel_names(store)
        if scope not in known:
            raise _unknown(scope, known)
    switch = KillSwitch(scope, reason, actor, time.time(), evidence)
    details = {"evidence": evidence} if evidence else {}
    store.set_kill(switch, AuditEntry(switch.at, actor, "kill", scope, reason, details))
    log.info("kill switch %s set by %s: %s", scope, actor, reason)
    return switch


def unkill(
    store: ControlStore, funnel: str | None, *, actor: str, reason: str,
) -> KillSwitch:
    if not reason.strip():
        raise ControlError("a reason is required")
    scope = _scope(funnel)
    now = time.time()
    previous = store.clear_kill(scope, AuditEntry(now, actor, "unkill", scope, reason))
    if previous is None:
        set_now = sorted(store.kill_switches())
        raise ControlError(f"kill switch {scope} is not set (set: "
                           f"{', '.join(set_now) or 'none'}); nothing was changed")
    store.set_meta(f"unkilled_at:{scope}", repr(now))  # guardrails judge afresh from here
    log.info("kill switch %s cleared by %s: %s", scope, actor, reason)
    return previous
