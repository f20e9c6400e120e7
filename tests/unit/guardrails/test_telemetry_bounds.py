"""Telemetry in Redis stays bounded whatever the number of units, and its sample keeps the
arms comparable: the same units in both arms and every kind."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from control.decision import Backend, Reason
from guardrails.telemetry import COARSE_SECONDS, TelemetryRecorder, in_sample, unit_hash
from guardrails.telemetry_redis import RedisTelemetry
from proxy.outcome import RequestOutcome

pytestmark = pytest.mark.redis


def outcome(arm: str, unit: str, signals: tuple[str, ...] = (),
            reason: Reason = Reason.RULE) -> RequestOutcome:
    return RequestOutcome("warranties", "IE", unit, Backend(arm), reason, "POST", "/x", 201,
                          0.01, None, signals)


def record(store: RedisTelemetry, outcomes: list[RequestOutcome]) -> None:
    recorder = TelemetryRecorder(store.bucket_seconds)
    for o in outcomes:
        recorder.observe(o)
    store.add(recorder.drain())


def checkouts(batch: int, core_share: float, conversion: dict[str, float],
              n: int = 1000) -> list[RequestOutcome]:
    """`n` units starting a checkout, `core_share` of them on the core, converting at each
    arm's rate (deterministic: unit i of each batch)."""
    outcomes = []
    for i in range(n):
        unit = f"u{batch}-{i}"
        arm = "core" if (i % 100) < core_share * 100 else "legacy"
        outcomes.append(outcome(arm, unit, ("checkout_started",)))
        if (i // 100) % 10 < conversion[arm] * 10:
            outcomes.append(outcome(arm, unit, ("order_placed",), Reason.STICKY))
    return outcomes


@pytest.fixture
def replicas(redis_clean_url: str) -> Iterator[list[RedisTelemetry]]:
    stores = [RedisTelemetry(redis_clean_url, bucket_seconds=5, max_units=2000)
              for _ in range(2)]
    yield stores
    for store in stores:
        store.close()


def test_units_in_redis_stay_under_the_bound_across_replicas(
    replicas: list[RedisTelemetry],
) -> None:
    for batch in range(20):  # 20,000 units, 48,000 unit entries, from two replicas in turn
        record(replicas[batch % 2], checkouts(batch, 0.5, {"core": 0.4, "legacy": 0.4}))
        assert replicas[0].unit_count() <= 2000
    assert replicas[0].sample_shift >= 4
    assert replicas[1].sample_shift == replicas[0].sample_shift  # one level, in Redis


def test_the_sample_keeps_each_arm_s_share_and_conversion_unbiased(
    replicas: list[RedisTelemetry],
) -> None:
    store = replicas[0]
    truth = {"core": 0.3, "legacy": 0.6}
    for batch in range(40):  # 40,000 units: 30 % on the core, converting at 30 % and 60 %
        record(store, checkouts(batch, 0.3, truth))
    assert store.unit_count() <= 2000
    now = time.time()
    w = store.window("warranties", now - 60, now + 1)
    started = w.core.checkout_units + w.legacy.checkout_units
    assert started > 500  # a sample, not what was left after a bias
    # within 4 standard errors of the truth
    share = w.core.checkout_units / started
    assert abs(share - 0.3) < 4 * (0.3 * 0.7 / started) ** 0.5, share
    for arm, stats in (("core", w.core), ("legacy", w.legacy)):
        rate = stats.converted_units / stats.checkout_units
        se = (truth[arm] * (1 - truth[arm]) / stats.checkout_units) ** 0.5
        assert abs(rate - truth[arm]) < 4 * se, (arm, rate)
        assert stats.converted_units <= stats.checkout_units  # the same units in every kind


def test_every_unit_kept_is_in_the_sample_of_the_shared_level(
    replicas: list[RedisTelemetry], redis_clean_url: str,
) -> None:
    first, second = replicas
    for batch in range(6):
        record(first, checkouts(batch, 0.5, {"core": 0.5, "legacy": 0.5}))
    level = first.sample_shift
    assert level >= 1 and second.sample_shift == 0  # the second has not seen the level yet
    record(second, [outcome("core", f"late-{i}", ("checkout_started",)) for i in range(3000)])
    client = redis.Redis.from_url(redis_clean_url, decode_responses=True)
    try:
        keys = list(client.scan_iter("strangler:tm:u:*"))
        assert len(keys) == 6  # started, converted and rule:IE, in each arm
        level = int(client.get("strangler:tm:sample") or 0)
        for key in keys:
            members = client.zrange(key, 0, -1)
            assert members
            assert all(in_sample(unit_hash(u), level) for u in members), key
    finally:
        client.close()


def test_every_telemetry_key_expires(
    replicas: list[RedisTelemetry], redis_clean_url: str,
) -> None:
    store = replicas[0]
    for batch in range(4):
        record(store, checkouts(batch, 0.5, {"core": 0.5, "legacy": 0.5}))
    client = redis.Redis.from_url(redis_clean_url, decode_responses=True)
    try:
        keys = list(client.scan_iter("strangler:tm:*"))
        assert {k.split(":")[2] for k in keys} == {
            "c", "u", "rule-countries", "unit-keys", "sample"}
        for key in keys:
            assert 0 < client.ttl(key) <= store.retention + COARSE_SECONDS, key
    finally:
        client.close()
