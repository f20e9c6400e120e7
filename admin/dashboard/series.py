"""Per-minute time series of both arms of a funnel, for the dashboard's charts.

Each point is one minute of telemetry (`TelemetryStore.window`) turned into the four rates
the guardrails judge: conversion (units that placed an order / units that started a
checkout, at most 1), payment success (orders placed / payment attempts, at most 1),
p95 latency (interpolated from the latency histogram, ms) and error rate (5xx and upstream
failures / requests).
A rate whose denominator is zero is None: no data, not zero.

A minute that ended more than `settle_seconds` ago no longer changes (the proxy flushes its
telemetry every second), so its point is computed once and cached; a poll recomputes only
the last minute or two.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Protocol

from guardrails.model import LATENCY_BOUNDS_MS, ArmStats, FunnelWindow
from guardrails.stats import histogram_quantile

STEP_SECONDS = 60
DEFAULT_MINUTES = 60
MAX_MINUTES = 360
# The end of a minute's window: bucket starts are whole seconds, so this covers the
# minute's last bucket and not the next minute's first.
_WINDOW = STEP_SECONDS - 1e-3


class WindowSource(Protocol):
    def window(self, funnel: str, since: float, until: float) -> FunnelWindow: ...


def _rate(successes: int, n: int) -> float | None:
    """A rate among `n`, at most 1 as the judge counts it: in one minute, units may place
    orders whose checkouts started the minute before."""
    return min(successes, n) / n if n else None


def p95_ms(stats: ArmStats) -> float | None:
    """The interpolated p95 latency (ms); beyond the last histogram edge it is reported as
    that edge (a lower bound), JSON having no infinity."""
    value = histogram_quantile(stats.latency_buckets, 0.95)
    if value is None:
        return None
    return LATENCY_BOUNDS_MS[-1] if math.isinf(value) else round(value, 2)


def arm_point(stats: ArmStats) -> dict[str, Any]:
    """The four guardrail rates of one arm over one window, with their counts."""
    return {
        "conversion": _rate(stats.converted_units, stats.checkout_units),
        "payment_success": _rate(stats.payment_successes, stats.payment_attempts),
        "p95_ms": p95_ms(stats),
        "error_rate": _rate(stats.errors, stats.requests),
        "requests": stats.requests,
        "checkouts": stats.checkout_units,
        "payment_attempts": stats.payment_attempts,
    }


def window_point(start: int, window: FunnelWindow) -> dict[str, Any]:
    return {"t": start, "core": arm_point(window.core), "legacy": arm_point(window.legacy)}


def minute_starts(now: float, minutes: int) -> list[int]:
    """Starts of the last `minutes` minutes, oldest first, the current (partial) one last."""
    current = int(now // STEP_SECONDS * STEP_SECONDS)
    return [current - STEP_SECONDS * i for i in range(minutes - 1, -1, -1)]


class SeriesCache:
    """Points of settled minutes, per funnel; thread-safe (called from worker threads)."""

    def __init__(self, source: WindowSource, settle_seconds: float = 10.0) -> None:
        self.source = source
        self.settle_seconds = settle_seconds
        self._points: dict[tuple[str, int], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def series(self, funnel: str, now: float, minutes: int = DEFAULT_MINUTES) -> dict[str, Any]:
        starts = minute_starts(now, max(1, min(minutes, MAX_MINUTES)))
        points = [self._point(funnel, start, now) for start in starts]
        self._forget(now)
        return {"funnel": funnel, "step_seconds": STEP_SECONDS, "now": now, "points": points}

    def _point(self, funnel: str, start: int, now: float) -> dict[str, Any]:
        key = (funnel, start)
        with self._lock:
            cached = self._points.get(key)
        if cached is not None:
            return cached
        point = window_point(start, self.source.window(funnel, start, start + _WINDOW))
        if now > start + STEP_SECONDS + self.settle_seconds:
            with self._lock:
                self._points[key] = point
        return point

    def _forget(self, now: float) -> None:
        """Drop points older than the longest series anyone can ask for."""
        horizon = now - (MAX_MINUTES + 1) * STEP_SECONDS
        with self._lock:
            for key in [k for k in self._points if k[1] < horizon]:
                del self._points[key]
