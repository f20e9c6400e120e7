"""Drives staged rollouts (see `control.rollout`) on the guardrail monitor's word.

Runs beside the monitor, on the replica that holds the monitor lease: each tick it takes
the monitor's report, moves every active rollout one step and applies the percentage a step
asks for through `control.operations.ramp`, so a rollout survives the CLI exiting.

A rollout with a shadow parity gate also reads the shadow summary the proxy stores in the
control store every tick (`control.status.shadow_summary`) and judges it at its bar
(`shadow.report.parity_gate`); a summary older than `MAX_SHADOW_SUMMARY_AGE` counts as none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol

from control import operations, rollout
from control.decision import is_killed
from control.status import shadow_summary
from control.store import ControlStore
from shadow.report import ParityGate, parity_gate

# A shadow summary older than this is no evidence: the proxy holding the monitor lease
# rewrites it every tick (STRANGLER_GUARD_INTERVAL, 5 s by default).
MAX_SHADOW_SUMMARY_AGE = 120.0

log = logging.getLogger("strangler.rollout")


class Ramp(Protocol):
    def __call__(
        self, store: ControlStore, funnel: str, country: str | None, percent: Decimal, *,
        actor: str, reason: str,
    ) -> object: ...


def verdict_of(report: dict[str, Any], funnel: str) -> str | None:
    """The funnel's overall verdict for a rollout step: 'pass', 'fail' or
    'insufficient_data'; None when telemetry is missing or the funnel was not judged.
    A sample-ratio mismatch fails the verdict without tripping: the rollout freezes."""
    judged = report.get("funnels", {}).get(funnel)
    if report.get("telemetry") != "ok" or judged is None:
        return None
    if judged["trips"]:
        return "fail"
    return "pass" if judged["verdict"] == "pass" else "insufficient_data"


def failing_guardrails(report: dict[str, Any], funnel: str) -> tuple[str, ...]:
    judged = report.get("funnels", {}).get(funnel) or {}
    return tuple(g["name"] for g in judged.get("guardrails", []) if g.get("verdict") == "fail")


def waiting_on(report: dict[str, Any], funnel: str) -> str | None:
    """What the funnel's insufficient guardrails lack, and when they may have it."""
    judged = report.get("funnels", {}).get(funnel) or {}
    if judged.get("sample_ratio_mismatch"):
        return "the split differs from the rules (sample ratio mismatch): frozen"
    waits = [f"{g['name']}: {g['waiting']['lacks']}, {g['waiting']['text']}"
             for g in judged.get("guardrails", []) if g.get("waiting")]
    return "; ".join(waits) or None


def parity_of(summary: dict[str, Any], r: rollout.Rollout, now: float) -> ParityGate | None:
    """The rollout's parity gate judged on the stored shadow summary; None without a gate,
    or without a recent summary."""
    if r.parity_bar is None:
        return None
    at = summary.get("at")
    if not isinstance(at, int | float) or now - at > MAX_SHADOW_SUMMARY_AGE:
        return None
    return parity_gate(summary, r.funnel, r.parity_bar, r.parity_min_units)


class RolloutDriver:
    def __init__(
        self, store: ControlStore, kills: Callable[[], frozenset[str]],
        ramp: Ramp = operations.ramp,
    ) -> None:
        self.store = store
        self.kills = kills
        self.ramp = ramp

    def advance(self, report: dict[str, Any], now: float) -> list[dict[str, Any]]:
        """Move every active rollout one tick; returns their summaries for the report."""
        active = [r for r in rollout.all_rollouts(self.store) if r.state in rollout.ACTIVE]
        gated = any(r.parity_bar is not None for r in active)
        shadow = shadow_summary(self.store) if gated else {}
        return [self._advance(r, report, shadow, now) for r in active]

    def _advance(self, current: rollout.Rollout, report: dict[str, Any],
                 shadow: dict[str, Any], now: float) -> dict[str, Any]:
        updated = current
        cmd = rollout.take_command(self.store, current.id)
        if cmd is not None:
            updated = rollout.command(updated, cmd, now)
        killed = is_killed(self.kills(), updated.funnel)
        decision = rollout.step(updated, verdict_of(report, updated.funnel), killed, now,
                                failing_guardrails(report, updated.funnel),
                                waiting_on(report, updated.funnel),
                                parity_of(shadow, updated, now))
        updated = decision.rollout
        if decision.apply_percent is not None:
            self.ramp(self.store, updated.funnel, updated.country, decision.apply_percent,
                      actor=f"rollout:{updated.id}",
                      reason=f"rollout {updated.id}: {updated.detail}")
        if updated != current:
            rollout.save(self.store, updated)
            log.warning("rollout %s (%s): %s", updated.id, updated.funnel, updated.detail)
        return {"id": updated.id, "funnel": updated.funnel, "state": updated.state,
                "percent": str(updated.percent), "detail": updated.detail}
