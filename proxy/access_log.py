"""The access log: one line per proxied request, off the hot path (an outcome observer).

Off by default (`STRANGLER_ACCESS_LOG=off`): the observer is then not even registered, so
the hot path pays nothing. `on` logs every request, a number such as `0.01` that share of
them (a uniform random sample). Each line goes to the logger `strangler.access` at INFO,
whatever the root level, with the fields `method`, `path`, `status`, `duration_ms`,
`backend`, `reason`, `rule`, `rules_version`, `funnel`, `country`, `upstream_error` and
`trace_id`: JSON fields with `--log-format json`, the message in text.

The trace id is the request's (`proxy.trace_context.CURRENT_TRACE_ID`): set by the tracing
wrapper when tracing is on; otherwise, while the access log is on, the proxy takes it from
the client's W3C `traceparent` header (`trace_id_from_headers`).
"""

from __future__ import annotations

import logging
import random

from control.decision import Backend, Reason
from proxy.outcome import RequestOutcome
from proxy.trace_context import CURRENT_TRACE_ID

LOGGER = "strangler.access"
HEX = frozenset("0123456789abcdef")


class AccessLog:
    """An `OutcomeObserver` logging `rate` (0-1] of the outcomes it sees."""

    def __init__(self, rate: float, logger: logging.Logger | None = None) -> None:
        self.rate = rate
        self.log = logger or logging.getLogger(LOGGER)
        if self.log.level == logging.NOTSET:  # on means logged, whatever the root's level
            self.log.setLevel(logging.INFO)
        self._random = random.random

    def observe(self, outcome: RequestOutcome) -> None:
        if outcome.reason is Reason.FAILOVER and outcome.backend is Backend.CORE:
            return  # the core's half of a failover: legacy's outcome is the request's line
        if self.rate < 1.0 and self._random() >= self.rate:
            return
        duration_ms = round(outcome.duration * 1000, 3)
        trace_id = CURRENT_TRACE_ID.get()
        self.log.info(
            "%s %s %d %.1fms %s %s rule=%s rules=%s funnel=%s trace=%s", outcome.method,
            outcome.path, outcome.status, duration_ms, outcome.backend.value,
            outcome.reason.value, outcome.rule or "-", outcome.rules_version or "-",
            outcome.funnel, trace_id or "-",
            extra={
                "method": outcome.method, "path": outcome.path, "status": outcome.status,
                "duration_ms": duration_ms, "backend": outcome.backend.value,
                "reason": outcome.reason.value, "rule": outcome.rule,
                "rules_version": outcome.rules_version, "funnel": outcome.funnel,
                "country": outcome.country, "upstream_error": outcome.upstream_error,
                "trace_id": trace_id,
            },
        )


def trace_id_from_traceparent(value: str) -> str | None:
    """The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), or None when
    the header is malformed or the id is all zeros (invalid by the specification)."""
    if len(value) < 55 or value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    version, trace_id = value[:2], value[3:35]
    if version == "ff" or not HEX.issuperset(version) or not HEX.issuperset(trace_id):
        return None
    if (version == "00" and len(value) != 55) or (len(value) > 55 and value[55] != "-"):
        return None
    return None if trace_id == "0" * 32 else trace_id


def trace_id_from_headers(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The trace id of the request's `traceparent` header, if any and well formed."""
    for name, value in headers:
        if name == b"traceparent":
            return trace_id_from_traceparent(value.decode("latin-1").strip())
    return None
