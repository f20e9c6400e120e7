"""Time to a verdict: what an `insufficient_data` guardrail lacks, and when, at the recent
rate of traffic, it can have it. Pure: a judged result and a recent window in, plain data
out (the monitor adds it to its report; `guard status`, `rollout status` and the dashboard
show it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from guardrails.judge import SAMPLE_UNIT, GuardrailResult, lacks
from guardrails.model import ArmStats, FunnelWindow, Verdict

RECENT_SECONDS = 300.0

# What each guardrail counts as a sample of an arm (as the judge does).
SAMPLES: dict[str, Callable[[ArmStats], int]] = {
    "conversion": lambda a: a.checkout_units,
    "payment_success": lambda a: a.payment_attempts,
    "latency_p95": lambda a: sum(a.latency_buckets),
    "sample_ratio": lambda a: a.rule_units,
}


def _duration(minutes: float) -> str:
    if minutes < 1:
        return "under a minute"
    if minutes < 90:
        return f"about {math.ceil(minutes)} min"
    return f"about {minutes / 60:.1f} h"


def time_to_verdict(result: GuardrailResult, recent: FunnelWindow) -> dict[str, Any] | None:
    """For an insufficient result that counts samples: what it lacks, the recent rate per
    arm, and the estimated wait (None: no traffic of the lacking arm lately)."""
    count = SAMPLES.get(result.name)
    if result.verdict is not Verdict.INSUFFICIENT or count is None:
        return None
    minutes = (recent.seconds or RECENT_SECONDS) / 60
    rates = {"core": count(recent.core) / minutes, "legacy": count(recent.legacy) / minutes}
    need = result.evidence.get("min_samples")
    if need is None:  # enough samples, but the bound straddles the limit
        return {"lacks": "a narrower confidence bound", "per_minute": {
            arm: round(r, 3) for arm, r in rates.items()}, "eta_seconds": None,
            "text": "enough samples; the estimate is near the limit and more data narrows "
                    "the bound (watch the bound column approach the threshold)"}
    missing = {"core": max(0, need - result.n_core), "legacy": max(0, need - result.n_legacy)}
    waits = {arm: (missing[arm] / rates[arm] if rates[arm] > 0 else math.inf)
             for arm in missing if missing[arm] > 0}
    slowest = max(waits, key=lambda arm: waits[arm]) if waits else None
    unit = SAMPLE_UNIT[result.name]
    eta = waits[slowest] if slowest is not None else 0.0
    if slowest is None:
        text = "enough samples: a verdict on the next tick"
    elif math.isinf(eta):
        text = (f"no {slowest} {unit} in the last {minutes:.0f} min: no estimate until "
                f"{slowest} traffic comes")
    else:
        text = (f"{_duration(eta)} at {rates[slowest]:.2g} {unit}/min ({slowest}, last "
                f"{minutes:.0f} min)")
    return {"lacks": lacks(result.name, result.n_core, result.n_legacy, need),
            "per_minute": {arm: round(r, 3) for arm, r in rates.items()},
            "eta_seconds": None if math.isinf(eta) else round(eta * 60, 1), "text": text}
