from __future__ import annotations

import time

import pytest

from control.decision import Backend, Reason
from guardrails.model import latency_bucket
from guardrails.telemetry import MemoryTelemetry, TelemetryRecorder
from guardrails.telemetry_redis import RedisTelemetry
from proxy.outcome import RequestOutcome


def outcome(backend="core", status=200, signals=(), unit="u1", country="IE", duration=0.012,
            funnel="warranties", reason=Reason.RULE, error=None):
    return RequestOutcome(funnel, country, unit, Backend(backend), reason, "POST", "/x",
                          status, duration, error, tuple(signals))


@pytest.fixture(params=["memory", "redis"])
def telemetry(request):
    if request.param == "memory":
        store = MemoryTelemetry(bucket_seconds=5)
    else:
        store = RedisTelemetry(request.getfixturevalue("redis_clean_url"), bucket_seconds=5)
    yield store
    store.close()


def record(store, outcomes):
    recorder = TelemetryRecorder(store.bucket_seconds)
    for o in outcomes:
        recorder.observe(o)
    store.add(recorder.drain())
    assert not recorder.drain()


def test_counts_requests_errors_and_latency_per_arm(telemetry):
    record(telemetry, [
        outcome("core", 200), outcome("core", 503), outcome("core", 200, error="reset"),
        outcome("legacy", 200, duration=0.4), outcome("legacy", 201, duration=0.4),
    ])
    now = time.time()
    w = telemetry.window("warranties", now - 60, now + 1)
    assert (w.core.requests, w.core.errors) == (3, 2)
    assert (w.legacy.requests, w.legacy.errors) == (2, 0)
    assert w.core.latency_buckets[latency_bucket(12)] == 3
    assert w.legacy.latency_buckets[latency_bucket(400)] == 2
    assert sum(w.legacy.latency_buckets) == 2


def test_conversion_counts_distinct_units(telemetry):
    record(telemetry, [
        outcome(unit="a", signals=["checkout_started"]),
        outcome(unit="a", signals=["checkout_started"]),  # same unit again
        outcome(unit="b", signals=["checkout_started"]),
        outcome(unit="a", signals=["payment_attempted", "order_placed"]),
        outcome(unit="b", signals=["payment_attempted", "payment_declined"]),
    ])
    now = time.time()
    core = telemetry.window("warranties", now - 60, now + 1).core
    assert (core.checkout_units, core.converted_units) == (2, 1)
    assert (core.payment_attempts, core.payment_successes, core.payment_declines) == (2, 1, 1)


def test_rule_units_are_counted_per_arm_and_country(telemetry):
    record(telemetry, [
        outcome("core", unit="a", country="IE"), outcome("core", unit="a", country="IE"),
        outcome("legacy", unit="b", country="IE"), outcome("legacy", unit="c", country="PT"),
        outcome("core", unit="d", country="PT", reason=Reason.STICKY),
    ])
    now = time.time()
    assert telemetry.rule_units("warranties", now - 60, now + 1) == {
        "core": {"IE": 1},
        "legacy": {"IE": 1, "PT": 1},
    }
    w = telemetry.window("warranties", now - 60, now + 1)
    assert (w.core.rule_units, w.legacy.rule_units) == (1, 2)


def test_windows_only_count_what_happened_inside_them(telemetry):
    record(telemetry, [outcome()])
    now = time.time()
    assert telemetry.window("warranties", now + 100, now + 200).core.requests == 0
    assert telemetry.window("other", now - 60, now + 1).core.requests == 0


def test_long_windows_read_coarse_buckets_with_the_same_totals(telemetry):
    record(telemetry, [outcome() for _ in range(7)])
    now = time.time()
    assert telemetry.window("warranties", now - 6 * 3600, now + 1).core.requests == 7


def test_per_country_breakdown(telemetry):
    record(telemetry, [outcome(country="IE"), outcome(country="PT"), outcome("legacy", country="PT")])
    now = time.time()
    by_country = telemetry.countries("warranties", now - 60, now + 1)
    assert by_country["IE"]["core"].requests == 1
    assert by_country["PT"]["legacy"].requests == 1


def test_requests_without_a_funnel_are_not_recorded():
    recorder = TelemetryRecorder(5)
    recorder.observe(outcome(funnel="-"))
    assert not recorder.drain()


def test_replicas_pool_their_figures_in_redis(redis_clean_url):
    a = RedisTelemetry(redis_clean_url, bucket_seconds=5)
    b = RedisTelemetry(redis_clean_url, bucket_seconds=5)
    record(a, [outcome(unit="x", signals=["checkout_started"])])
    record(b, [outcome(unit="y", signals=["checkout_started"]), outcome("legacy")])
    now = time.time()
    w = a.window("warranties", now - 60, now + 1)
    assert (w.core.requests, w.core.checkout_units, w.legacy.requests) == (2, 2, 1)
    a.close()
    b.close()


def test_embedded_units_stay_bounded_as_a_sample_kept_alike_in_every_arm_and_kind():
    store = MemoryTelemetry(bucket_seconds=5, max_units=2000)
    for batch in range(20):  # 20,000 units split 50/50, half of them converting
        outcomes = []
        for i in range(1000):
            unit = f"u{batch}-{i}"
            arm = "core" if i % 2 else "legacy"
            outcomes.append(outcome(arm, unit=unit, signals=["checkout_started"]))
            if i % 4 < 2:
                outcomes.append(outcome(arm, unit=unit, signals=["order_placed"],
                                        reason=Reason.STICKY))
        record(store, outcomes)
        assert store.unit_count() <= 2000
    assert store.sample_shift >= 4  # 60,000 unit entries thinned below 2,000
    now = time.time()
    w = store.window("warranties", now - 60, now + 1)
    kept = 20_000 >> store.sample_shift  # the expected sample of started units
    for arm in (w.core, w.legacy):
        assert 0.6 * kept / 2 < arm.checkout_units < 1.4 * kept / 2
        # the same units are kept for every kind: converted ones are a subset of started ones
        assert 0.35 < arm.converted_units / arm.checkout_units < 0.65
        assert arm.converted_units <= arm.checkout_units
    rule = store.rule_units("warranties", now - 60, now + 1)
    assert 0.7 < rule["core"]["IE"] / rule["legacy"]["IE"] < 1.4


def test_embedded_units_expire_oldest_first():
    store = MemoryTelemetry(bucket_seconds=5, retention=60)
    recorder = TelemetryRecorder(5)
    for i in range(3):
        recorder.observe(outcome(unit=f"old{i}"))
    batch = recorder.drain()
    for units in batch.units.values():
        for unit in units:
            units[unit] = time.time() - 120  # first seen before the retention horizon
    store.add(batch)
    record(store, [outcome(unit="new")])
    now = time.time()
    assert store.rule_units("warranties", now - 3600, now + 1) == {"core": {"IE": 1}}
    assert store.unit_count() == 1
