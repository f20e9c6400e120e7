"""Prometheus metrics of the proxy, on a registry of its own per app."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from control.decision import Reason
from proxy.outcome import RequestOutcome

if TYPE_CHECKING:
    from proxy.forward import ReadAheadBudget
    from shadow.mirror import Mirror

disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[str, str, Reason, int], tuple[Any, Any]] = {}
        r = self.registry
        self.requests = Counter(
            "strangler_requests_total", "Proxied requests",
            ["backend", "funnel", "reason", "code"], registry=r,
        )
        self.latency = Histogram(
            "strangler_request_duration_seconds", "Time to the last response byte",
            ["backend", "funnel"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.errors = Counter(
            "strangler_upstream_errors_total", "Upstream failures and 5xx responses",
            ["backend", "funnel", "kind"], registry=r,
        )
        self.shadow_comparisons = Counter(
            "strangler_shadow_comparisons_total", "Mirrored requests compared with legacy's "
            "answer (shadow parity), by result: match or mismatch",
            ["funnel", "route", "result"], registry=r,
        )
        self.shadow_drops = Counter(
            "strangler_shadow_dropped_total", "Mirrored requests dropped before a comparison, "
            "by reason (queue_full, too_large, unmapped, legacy_error, error, stopped)",
            ["funnel", "reason"], registry=r,
        )
        self.read_ahead_refused = Counter(
            "strangler_read_ahead_refused_total", "Request bodies streamed instead of read "
            "ahead: STRANGLER_BODY_BUFFER_TOTAL_BYTES was held by others", registry=r,
        )
        self.signals = Counter(
            "strangler_signals_total", "Business signals recognised from responses",
            ["backend", "funnel", "signal"], registry=r,
        )
        self.rules_version = Gauge(
            "strangler_rules_version", "Active rules version (0: none)", registry=r
        )
        self.reload_failures = Counter(
            "strangler_rules_reload_failures_total", "Rejected rules versions", registry=r
        )
        self.kill_switch = Gauge(
            "strangler_kill_switch", "1 while a kill switch is set", ["scope"], registry=r
        )
        self.rules_file_rejected = Gauge(
            "strangler_rules_file_rejected",
            "1 while the watched rules file is invalid (the last good rules serve)", registry=r,
        )
        self.rules_conflicts = Gauge(
            "strangler_rules_conflicts",
            "Conflicts of the refused rules file edit (0: the file applies)", registry=r,
        )
        self.task_errors = Counter(
            "strangler_background_errors_total",
            "Exceptions caught in a background loop (which then goes on)", ["task"],
            registry=r,
        )
        self.store_errors = Counter(
            "strangler_store_errors_total", "Failed reads of the control store", registry=r
        )
        self.telemetry_errors = Counter(
            "strangler_telemetry_errors_total", "Telemetry flushes that failed", registry=r
        )
        self.guard_verdict = Gauge(
            "strangler_guardrail_verdict", "1 pass, 0 insufficient data, -1 fail",
            ["funnel", "guardrail"], registry=r,
        )
        self.guard_estimate = Gauge(
            "strangler_guardrail_estimate", "Current estimate of a guardrail's metric",
            ["funnel", "guardrail", "arm"], registry=r,
        )
        self.guard_trips = Counter(
            "strangler_guardrail_trips_total", "Kill switch trips by the monitor",
            ["funnel", "guardrail"], registry=r,
        )
        self.guard_telemetry_up = Gauge(
            "strangler_guardrail_telemetry_up", "0 while the monitor cannot read telemetry",
            registry=r,
        )

    def watch(self, read_ahead: ReadAheadBudget, mirror: Mirror) -> None:
        """Gauges read at scrape time: the request bytes read ahead now (`ReadAheadBudget`)
        and how busy the event loop was at the shadow mirror's last probe."""
        r = self.registry
        Gauge("strangler_read_ahead_bytes", "Request body bytes read ahead now (at most "
              "STRANGLER_BODY_BUFFER_TOTAL_BYTES)", registry=r).set_function(
            lambda: read_ahead.held)
        Gauge("strangler_shadow_loop_busy", "Share of the time the event loop was on the CPU "
              "at the shadow mirror's last probe (replays wait above "
              "STRANGLER_SHADOW_MAX_BUSY)", registry=r).set_function(lambda: mirror.busy)

    def shadow_compared(self, funnel: str, route: str, matched: bool) -> None:
        """A mirrored request compared (shadow.mirror's on_compared)."""
        self.shadow_comparisons.labels(funnel, route, "match" if matched else "mismatch").inc()

    def shadow_dropped(self, funnel: str, reason: str, n: int = 1) -> None:
        """Mirrored requests dropped (shadow.mirror's on_dropped, once a second)."""
        self.shadow_drops.labels(funnel, reason).inc(n)

    def observe(self, o: RequestOutcome) -> None:
        backend = o.backend.value
        if o.failed_over:  # legacy served it (its own outcome counts the request)
            self.errors.labels(backend, o.funnel, o.upstream_error or "connect").inc()
            return
        key = (backend, o.funnel, o.reason, o.status // 100)
        children = self._children.get(key)
        if children is None:  # labels() costs a lock and a dict build: cache the children
            children = self._children[key] = (
                self.requests.labels(backend, o.funnel, o.reason.value, f"{o.status // 100}xx"),
                self.latency.labels(backend, o.funnel))
        children[0].inc()
        children[1].observe(o.duration)
        if o.upstream_error is not None:
            self.errors.labels(backend, o.funnel, o.upstream_error).inc()
        elif o.status >= 500:
            self.errors.labels(backend, o.funnel, "5xx").inc()
        for signal in o.signals:
            self.signals.labels(backend, o.funnel, signal).inc()

    def set_kills(self, scopes: frozenset[str], known: set[str]) -> None:
        for scope in known | scopes:
            self.kill_switch.labels(scope).set(1 if scope in scopes else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
