"""Plain values the guardrail judge works on: per-arm counts over a window.

No framework and no Redis here: telemetry adapters build these, the judge reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

# Upper bounds (ms) of the latency histogram buckets, each 1.2x the previous one from 1 ms to
# past 30 s, so a quantile is pinned within 20% (a coarser 1-2-3-5-7 ladder could hide a 1.5x
# slowdown of p95 between two edges). A last, implicit bucket is +inf.
LATENCY_BOUNDS_MS: tuple[float, ...] = tuple(round(1.2**i, 3) for i in range(58))
N_LATENCY_BUCKETS = len(LATENCY_BOUNDS_MS) + 1


def latency_bucket(ms: float) -> int:
    """Index of the histogram bucket holding a latency of `ms` milliseconds."""
    lo, hi = 0, len(LATENCY_BOUNDS_MS)
    while lo < hi:
        mid = (lo + hi) // 2
        if ms <= LATENCY_BOUNDS_MS[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass(frozen=True, slots=True)
class ArmStats:
    """What one arm (core or legacy) of one funnel did in a window."""

    requests: int = 0
    errors: int = 0  # 5xx responses and upstream failures
    latency_buckets: tuple[int, ...] = field(default=(0,) * N_LATENCY_BUCKETS)
    checkout_units: int = 0  # distinct units that started a checkout
    converted_units: int = 0  # distinct units among those that placed an order
    payment_attempts: int = 0
    payment_successes: int = 0  # orders placed
    payment_declines: int = 0
    rule_units: int = 0  # distinct units routed to this arm by a RULE decision
    unreachable: int = 0  # requests that could not reach it (failed over, or OWNER 503s)


@dataclass(frozen=True, slots=True)
class FunnelWindow:
    """Both arms of one funnel over one window of `seconds` (0 when unknown)."""

    funnel: str
    core: ArmStats
    legacy: ArmStats
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class CoreReach:
    """Whether the core could be reached, per fine telemetry bucket, oldest first: (bucket
    start, requests the core answered, requests that could not reach it)."""

    bucket_seconds: int
    buckets: tuple[tuple[int, int, int], ...] = ()

    def unreachable_for(self, now: float) -> tuple[float, int]:
        """How long the core has been unreachable at least, and how many requests could not
        reach it since: counted from the end of the first bucket after the last one in which
        the core answered anything (conservative: the outage may be older, never younger).
        (0, 0) when the core answered in the newest buckets, or when nothing has tried it
        for two buckets (no evidence it is still down)."""
        size = self.bucket_seconds
        last_reached = max((s for s, r, _ in self.buckets if r > 0), default=None)
        down = [(s, u) for s, _, u in self.buckets
                if u > 0 and (last_reached is None or s > last_reached)]
        if not down or max(s for s, _ in down) + 2 * size < now:
            return 0.0, 0
        first = min(s for s, _ in down)
        return max(0.0, now - (first + size)), sum(u for _, u in down)


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INSUFFICIENT = "insufficient_data"
