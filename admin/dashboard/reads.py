"""What the dashboard reads from the control store, as JSON-ready values.

Every function here blocks on the store: call them in a worker thread.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from control import rollout
from control.status import shadow_summary
from control.store import ControlStore
from guardrails.report import read_report

MAX_AUDIT = 500
ROLLOUT_HISTORY = 5


def guardrail_report(store: ControlStore, local: dict[str, Any]) -> dict[str, Any]:
    """The guardrail monitor's latest report: the stored one (written by whichever replica
    holds the monitor lease) or this replica's own, whichever is newer."""
    stored = read_report(store)
    newest = max((stored, local), key=lambda r: float(r.get("at") or 0.0))
    return newest or {"at": None, "funnels": {}}


def audit_log(store: ControlStore, limit: int) -> list[dict[str, Any]]:
    """The newest audit entries first."""
    entries = store.audit_log(max(1, min(limit, MAX_AUDIT)))
    return sorted((asdict(e) for e in entries), key=lambda e: e["at"], reverse=True)


def rollouts(store: ControlStore) -> list[dict[str, Any]]:
    """Staged rollouts, the ones in progress first, then the newest."""
    out = []
    for r in rollout.all_rollouts(store):
        data = asdict(r)
        data["state"] = r.state.value
        data["percent"] = str(r.percent)
        data["active"] = r.state in rollout.ACTIVE
        data["history"] = list(r.history[-ROLLOUT_HISTORY:])
        out.append(data)
    return sorted(out, key=lambda d: (not d["active"], -d["created_at"]))


def shadow(store: ControlStore) -> dict[str, Any]:
    """The shadow parity summary as stored by the proxy holding the monitor lease (what
    `strangler shadow status --json` prints); `{"at": null, "funnels": {}}` before any."""
    return shadow_summary(store) or {"at": None, "funnels": {}}
