"""The proxy's access log (`proxy.access_log`): an outcome observer, off unless asked for,
sampled at a rate, with the decision's fields and the request's trace id."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from control.decision import Backend, Reason
from proxy.access_log import AccessLog, trace_id_from_headers, trace_id_from_traceparent
from proxy.config import ProxySettings
from proxy.outcome import RequestOutcome
from proxy.runtime import ProxyRuntime
from proxy.trace_context import CURRENT_TRACE_ID

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def outcome(reason: Reason = Reason.RULE, backend: Backend = Backend.CORE) -> RequestOutcome:
    return RequestOutcome(
        funnel="warranties", country="IE", unit="u_1", backend=backend, reason=reason,
        method="POST", path="/carts", status=201, duration=0.0123, upstream_error=None,
        signals=(), rule="ie-all", rules_version="7")


def logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "strangler.access"]


def test_a_line_carries_the_decision(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "strangler.access")
    token = CURRENT_TRACE_ID.set(TRACE)
    try:
        AccessLog(1.0).observe(outcome())
    finally:
        CURRENT_TRACE_ID.reset(token)
    [line] = logged(caplog)
    fields = {k: getattr(line, k) for k in (
        "method", "path", "status", "duration_ms", "backend", "reason", "rule",
        "rules_version", "funnel", "country", "upstream_error", "trace_id")}
    assert fields == {
        "method": "POST", "path": "/carts", "status": 201, "duration_ms": 12.3,
        "backend": "core", "reason": "RULE", "rule": "ie-all", "rules_version": "7",
        "funnel": "warranties", "country": "IE", "upstream_error": None, "trace_id": TRACE}
    assert line.getMessage() == (f"POST /carts 201 12.3ms core RULE rule=ie-all rules=7 "
                                 f"funnel=warranties trace={TRACE}")
    assert line.levelno == logging.INFO


def test_the_logger_logs_at_info_whatever_the_root_level() -> None:
    logger = logging.getLogger("strangler.access.test-level")
    AccessLog(1.0, logger)
    assert logger.getEffectiveLevel() == logging.INFO


def test_a_sample_rate_logs_that_share(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "strangler.access")
    log = AccessLog(0.25)
    draws = iter([0.1, 0.3, 0.9, 0.2, 0.26, 0.249])
    log._random = lambda: next(draws)
    for _ in range(6):
        log.observe(outcome())
    assert len(logged(caplog)) == 3


def test_the_core_half_of_a_failover_is_not_a_line(caplog: pytest.LogCaptureFixture) -> None:
    """The proxy records the core's unreachable attempt apart; legacy's answer is the
    request's one line."""
    caplog.set_level(logging.INFO, "strangler.access")
    log = AccessLog(1.0)
    log.observe(outcome(Reason.FAILOVER, Backend.CORE))
    log.observe(outcome(Reason.FAILOVER, Backend.LEGACY))
    [line] = logged(caplog)
    assert line.backend == "legacy"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("value", "expected"), [
    (f"00-{TRACE}-00f067aa0ba902b7-01", TRACE),
    (f"01-{TRACE}-00f067aa0ba902b7-01-future", TRACE),  # a later version may add fields
    (f"00-{TRACE}-00f067aa0ba902b7-01-extra", None),  # version 00 has exactly four
    (f"01-{TRACE}-00f067aa0ba902b7-01x", None),
    (f"ff-{TRACE}-00f067aa0ba902b7-01", None),
    (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),
    (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", None),
    ("00-abc-def-01", None), ("", None), ("garbage" * 10, None),
])
def test_the_trace_id_of_a_traceparent(value: str, expected: str | None) -> None:
    assert trace_id_from_traceparent(value) == expected


def test_the_trace_id_from_request_headers() -> None:
    headers = [(b"host", b"x"), (b"traceparent", f"00-{TRACE}-00f067aa0ba902b7-01".encode())]
    assert trace_id_from_headers(headers) == TRACE
    assert trace_id_from_headers([(b"host", b"x")]) is None


@pytest.mark.parametrize(("value", "rate"), [
    ("off", 0.0), ("on", 1.0), ("0.01", 0.01), ("1", 1.0), ("0", 0.0), ("ON", 1.0),
])
def test_the_setting_takes_off_on_or_a_rate(monkeypatch: pytest.MonkeyPatch, value: str,
                                            rate: float) -> None:
    monkeypatch.setenv("STRANGLER_ACCESS_LOG", value)
    assert ProxySettings().access_log == rate


@pytest.mark.parametrize("value", ["2", "-0.1", "sometimes"])
def test_a_bad_setting_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("STRANGLER_ACCESS_LOG", value)
    with pytest.raises(ValidationError):
        ProxySettings()


def test_off_by_default_the_hot_path_has_no_access_log_observer(tmp_path: Path) -> None:
    db = str(tmp_path / "c.sqlite3")
    off = ProxyRuntime(ProxySettings(db_path=db))
    assert ProxySettings().access_log == 0.0
    assert not any(isinstance(o, AccessLog) for o in off.observers)
    on = ProxyRuntime(ProxySettings(db_path=db, access_log=0.5))
    [log] = [o for o in on.observers if isinstance(o, AccessLog)]
    assert log.rate == 0.5
    for runtime in (off, on):
        runtime.store.close()
