"""What the guardrails count: failovers are not errors a customer saw, a payment attempt is
counted once whatever its retries and replays, an unkill starts afresh.

The monitor runs here on a fake clock against real telemetry stores (memory, and a real
Redis for the attempt merge that replicas share) and a real SQLite control store, so
minutes of traffic take milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from control import operations
from control.decision import Backend, Reason
from control.rules_loader import load_rules_text
from control.store.sqlite_store import SqliteControlStore
from guardrails.judge import judge_error_budget
from guardrails.model import CoreReach, Verdict
from guardrails.monitor import GuardrailMonitor
from guardrails.simulate import CORE_DOWN, ROLLING_RESTART, format_outages, simulate_outage
from guardrails.spec import ErrorBudgetSpec
from guardrails.telemetry import MemoryTelemetry, TelemetryRecorder
from guardrails.telemetry_redis import RedisTelemetry
from proxy.metrics import ProxyMetrics
from proxy.outcome import RequestOutcome

RULES = """\
schema: 1
guardrails:
  min_samples: 20
  conversion: null
  latency_p95: null
  sample_ratio: null
  payment_success: null
  error_budget:
    slo: 0.99
    min_requests: 20
    windows: [{long: 5m, short: 30s, burn_rate: 5}]
    unreachable_grace: 30s
funnels:
  - name: warranties
    match: {header: warranties}
    salt: w1
    rules:
      - {id: all, countries: '*', percent: 100}
"""
BUCKET = 10
T0 = 1_800_000_000.0  # a bucket edge


def served(t_status: int = 200, backend: str = "core", error: str | None = None,
           reason: Reason = Reason.RULE, signals: tuple[str, ...] = (),
           attempt: str | None = None, unit: str = "u") -> RequestOutcome:
    return RequestOutcome("warranties", "IE", unit, Backend(backend), reason, "POST", "/x",
                          t_status, 0.02, error, signals, attempt=attempt)


def failover() -> list[RequestOutcome]:
    """What the proxy records when the core refused a connection and legacy served."""
    return [served(503, "core", "connect", Reason.FAILOVER),
            served(200, "legacy", reason=Reason.FAILOVER)]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Harness:
    """Traffic at a steady rate through a recorder into telemetry; the monitor ticks every
    5 s of fake time, as the proxy's guard loop does."""

    def __init__(self, store: SqliteControlStore, telemetry: MemoryTelemetry) -> None:
        self.clock = Clock()
        self.store = store
        self.telemetry = telemetry
        self.recorder = TelemetryRecorder(BUCKET, clock=self.clock)
        rules = load_rules_text(RULES, "1")
        self.monitor = GuardrailMonitor(
            store=store, telemetry=telemetry, rules=lambda: rules,
            kills=lambda: frozenset(store.kill_switches()), metrics=ProxyMetrics())
        self.reports: list[dict] = []

    def run(self, seconds: float, rate: float, core_up) -> dict | None:
        """Requests at `rate` per second for `seconds`; `core_up(t)` says whether the core
        answers at t (else the request fails over). The report of the first trip, or None."""
        end = self.clock.now + seconds
        step = 1.0 / rate
        next_tick = self.clock.now + 5
        while self.clock.now < end:
            self.clock.now += step
            for o in ([served()] if core_up(self.clock.now - T0) else failover()):
                self.recorder.observe(o)
            if self.clock.now >= next_tick:
                next_tick += 5
                self.telemetry.add(self.recorder.drain())
                report = self.monitor.tick(self.clock.now)
                self.reports.append(report)
                if report["funnels"]["warranties"].get("tripped"):
                    return report
        return None


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    store = SqliteControlStore(tmp_path / "control.sqlite3")
    version = operations.apply_rules_text(store, RULES, source="t", actor="t", reason="t")
    assert version is not None
    h = Harness(store, MemoryTelemetry(BUCKET))
    # the epoch of the funnel begins when the rules were applied: before the fake clock
    store.set_meta("guard:epoch:warranties", '{"digest": "x", "start": 0}')
    yield h
    store.close()


def budget(report: dict) -> dict:
    return next(g for g in report["funnels"]["warranties"]["guardrails"]
                if g["name"] == "error_budget")


@pytest.mark.parametrize("rate", [2, 10])
def test_a_rolling_restart_of_the_core_never_trips(harness: Harness, rate: int) -> None:
    # ten minutes of traffic; the core restarts instance by instance: 2-3 s refused, a
    # few seconds of service between (the next instance), four times, then again later
    def up(t: float) -> bool:
        return not any(a <= t < b for a, b in ROLLING_RESTART.gaps)

    assert harness.run(600, rate, up) is None
    assert not harness.store.kill_switches()
    worst = max(budget(r)["evidence"].get("unreachable", {}).get("seconds", 0)
                for r in harness.reports)
    assert worst < 30
    failed_over = max(budget(r)["evidence"].get("unreachable", {}).get("requests", 0)
                      for r in harness.reports)
    assert failed_over > 0  # the monitor saw the failovers: they just burned nothing
    assert all(budget(r)["verdict"] != "fail" for r in harness.reports)


@pytest.mark.parametrize("rate", [2, 10])
def test_a_core_down_for_a_minute_trips_after_the_grace(harness: Harness, rate: int) -> None:
    (start, end), = CORE_DOWN.gaps
    report = harness.run(300, rate, lambda t: not start <= t < end)
    assert report is not None, "a core down for 60 s must trip"
    tripped_at = report["at"] - T0
    assert 150 <= tripped_at <= 180  # past the 30 s grace (bucket-rounded), within the outage
    result = budget(report)
    assert result["verdict"] == "fail"
    assert result["evidence"]["unreachable"]["seconds"] >= 30
    assert result["threshold"] == 30
    switch = harness.store.kill_switches()["warranties"]
    assert "error_budget" in switch.reason
    assert "unreachable" in result["detail"]


def test_the_simulation_reports_both_deploy_scenarios() -> None:
    runs = [simulate_outage(o, rate, seconds=400) for o in (ROLLING_RESTART, CORE_DOWN)
            for rate in (2, 10)]
    assert [r.tripped_at is not None for r in runs] == [False, False, True, True]
    assert all(r.failed_over > 0 for r in runs)
    assert all(150 <= (r.tripped_at or 0) <= 180 for r in runs[2:])
    table = format_outages(runs, 30)
    assert "rolling restart" in table and "core down for 60 s" in table


def test_failovers_are_not_requests_or_errors_of_the_core(harness: Harness) -> None:
    for o in failover() * 50 + [served()] * 10:
        harness.recorder.observe(o)
    harness.telemetry.add(harness.recorder.drain())
    w = harness.telemetry.window("warranties", T0 - 60, T0 + 60)
    assert (w.core.requests, w.core.errors, w.core.unreachable) == (10, 0, 50)
    assert w.legacy.requests == 50
    # an OWNER request the core could not take was not served: a customer-facing error
    harness.recorder.observe(served(503, "core", "connect", Reason.OWNER))
    harness.telemetry.add(harness.recorder.drain())
    w = harness.telemetry.window("warranties", T0 - 60, T0 + 60)
    assert (w.core.requests, w.core.errors, w.core.unreachable) == (11, 1, 51)


def test_failovers_leave_the_prometheus_request_counts_alone() -> None:
    metrics = ProxyMetrics()
    for o in failover():
        metrics.observe(o)
    text = metrics.render().decode()
    assert 'strangler_requests_total{backend="core"' not in text
    assert ('strangler_requests_total{backend="legacy",code="2xx",funnel="warranties",'
            'reason="FAILOVER"} 1.0') in text
    assert ('strangler_upstream_errors_total{backend="core",funnel="warranties",'
            'kind="connect"} 1.0') in text


def test_unreachable_for_is_a_lower_bound_from_the_last_answer() -> None:
    reach = CoreReach(10, ((0, 5, 0), (10, 3, 2), (20, 0, 4), (30, 0, 5), (40, 0, 5)))
    # answered in the bucket at 10; refused from then on: at least since 30 (20's end)
    assert reach.unreachable_for(45) == (15.0, 14)
    # the core answered in the newest bucket: not down
    assert CoreReach(10, ((0, 0, 5), (10, 1, 1))).unreachable_for(15) == (0.0, 0)
    # nothing tried the core lately: no evidence it is still down
    assert CoreReach(10, ((0, 0, 5), (10, 0, 0), (20, 0, 0))).unreachable_for(35) == (0.0, 0)
    # no answer in the whole horizon: down at least since the end of its first bucket
    assert CoreReach(10, ((0, 0, 1), (10, 0, 1), (20, 0, 1))).unreachable_for(25) == (15.0, 3)


def test_the_judge_fails_the_error_budget_only_past_the_grace() -> None:
    cfg = ErrorBudgetSpec(unreachable_grace=30)
    down = CoreReach(10, tuple((s, 0, 3) for s in range(0, 50, 10)))
    assert judge_error_budget(cfg, {}, down, 39).verdict is not Verdict.FAIL
    result = judge_error_budget(cfg, {}, down, 45)
    assert result.verdict is Verdict.FAIL
    assert (result.bound, result.threshold) == (35.0, 30.0)
    assert "unreachable for at least 35 s" in result.detail


@pytest.fixture(params=["memory", "redis"])
def telemetry(request: pytest.FixtureRequest) -> Iterator[MemoryTelemetry | RedisTelemetry]:
    store: MemoryTelemetry | RedisTelemetry
    if request.param == "memory":
        store = MemoryTelemetry(bucket_seconds=5)
    else:
        store = RedisTelemetry(request.getfixturevalue("redis_clean_url"), bucket_seconds=5)
    yield store
    store.close()


PAY = ("payment_attempted",)
PLACED = ("payment_attempted", "order_placed")
DECLINED = ("payment_attempted", "payment_declined")


def flush(store: MemoryTelemetry | RedisTelemetry, outcomes: list[RequestOutcome]) -> None:
    recorder = TelemetryRecorder(store.bucket_seconds)
    for o in outcomes:
        recorder.observe(o)
    store.add(recorder.drain())


def payments(store: MemoryTelemetry | RedisTelemetry) -> tuple[int, int, int, int]:
    now = time.time()
    core = store.window("warranties", now - 600, now + 1).core
    return (core.payment_attempts, core.payment_successes, core.payment_declines,
            core.converted_units)


def test_an_order_replayed_200_times_is_one_attempt_and_one_order(telemetry) -> None:
    key = "/checkouts/co_1/orders#key-1"
    # the first try broke off (core crash: 502), retries hit a restarting core (503),
    # then the order is placed; the client replays the same key 200 times
    flush(telemetry, [served(502, signals=PAY, attempt=key)])
    flush(telemetry, [served(503, signals=PAY, attempt=key)] * 5)
    flush(telemetry, [served(201, signals=PLACED, attempt=key)])
    for _ in range(4):  # several flushes: the merge holds across batches
        flush(telemetry, [served(201, signals=PLACED, attempt=key)] * 50)
    assert payments(telemetry) == (1, 1, 0, 1)


def test_a_failure_after_the_order_does_not_undo_it_and_declines_count_once(telemetry):
    placed, declined = "/checkouts/co_1/orders#a", "/checkouts/co_2/orders#b"
    flush(telemetry, [served(201, signals=PLACED, attempt=placed),
                      served(503, signals=PAY, attempt=placed),
                      served(402, signals=DECLINED, attempt=declined, unit="v")])
    flush(telemetry, [served(402, signals=DECLINED, attempt=declined, unit="v")] * 3)
    assert payments(telemetry) == (2, 1, 1, 1)


def test_attempts_without_a_key_count_per_request(telemetry) -> None:
    flush(telemetry, [served(201, signals=PLACED)] * 3)
    assert payments(telemetry)[:2] == (3, 3)


def test_replicas_share_one_attempt_through_redis(redis_clean_url: str) -> None:
    a = RedisTelemetry(redis_clean_url, bucket_seconds=5)
    b = RedisTelemetry(redis_clean_url, bucket_seconds=5)
    key = "/checkouts/co_9/orders#k"
    flush(a, [served(504, signals=PAY, attempt=key)])
    flush(b, [served(201, signals=PLACED, attempt=key)])
    flush(a, [served(201, signals=PLACED, attempt=key)])
    assert payments(a) == (1, 1, 0, 1)
    a.close()
    b.close()


def test_failures_just_before_an_unkill_never_count_again(tmp_path: Path) -> None:
    store = SqliteControlStore(tmp_path / "control.sqlite3")
    operations.apply_rules_text(store, RULES, source="t", actor="t", reason="t")
    telemetry = MemoryTelemetry(BUCKET)
    h = Harness(store, telemetry)
    store.set_meta("guard:epoch:warranties", '{"digest": "x", "start": 0}')
    # errors in the first half of a bucket, then a person clears the switch mid-bucket
    h.clock.now = T0 + 1
    for _ in range(100):
        h.recorder.observe(served(500, error=None))
    telemetry.add(h.recorder.drain())
    store.set_meta("unkilled_at:warranties", str(T0 + 4))
    assert h.monitor.epoch_start(load_rules_text(RULES, "1").funnels[0], T0 + 5) == T0 + 10
    report = h.monitor.tick(T0 + 9)
    assert not report["funnels"]["warranties"].get("tripped")
    assert budget(report)["n_core"] == 0
    store.close()


def test_attempts_kept_in_redis_are_bounded_whatever_the_traffic(redis_clean_url: str) -> None:
    import redis

    store = RedisTelemetry(redis_clean_url, bucket_seconds=5, attempt_budget=30)
    flood = [served(503, signals=PAY, attempt=f"/checkouts/co_x/orders#{i}") for i in range(100)]
    flush(store, flood)
    flush(store, flood[:10])  # the first 30 are remembered: these retries are the same
    client = redis.Redis.from_url(redis_clean_url)
    kept = [k for k in client.scan_iter("strangler:tm:a:*")]
    assert len(kept) == 30
    assert all(0 < client.ttl(k) <= 3600 for k in kept)
    client.close()
    # every attempt still counts, once each while remembered, per request past the budget
    assert payments(store)[0] == 100
    store.close()
