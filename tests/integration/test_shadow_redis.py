"""The shadow's Redis stores: the id map and the report, shared by replicas, bounded."""

from __future__ import annotations

import json

import pytest
import redis

from shadow.compare import compare
from shadow.idmap_redis import BUDGET, KEY, RedisIdMap
from shadow.report import MemoryShadowReport, ShadowBatch, ShadowRecorder
from shadow.report_redis import PREFIX, RedisShadowReport

pytestmark = pytest.mark.redis
ROUTE = "POST /carts/{cart_id}/items"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_replicas_share_the_id_map(redis_clean_url: str) -> None:
    a, b = RedisIdMap(redis_clean_url), RedisIdMap(redis_clean_url)
    try:
        assert await b.get("u1") == {}
        await a.add("u1", {"lg_cart_1": "co_cart_1"})
        await b.add("u1", {"lg_chk_1": "co_chk_1", "lg_cart_1": "co_cart_other"})
        assert await a.get("u1") == {"lg_cart_1": "co_cart_1", "lg_chk_1": "co_chk_1"}
        assert await b.get("u2") == {}
    finally:
        await a.close()
        await b.close()


async def test_a_units_map_expires_ttl_after_its_creation(redis_clean_url: str) -> None:
    ids = RedisIdMap(redis_clean_url, ttl=120)
    client = redis.Redis.from_url(redis_clean_url)
    try:
        await ids.add("u", {"lg_1": "co_1"})
        assert 0 < client.ttl(KEY + "u") <= 120
        client.expire(KEY + "u", 30)
        await ids.add("u", {"lg_2": "co_2"})  # adding does not extend it
        assert client.ttl(KEY + "u") <= 30
    finally:
        await ids.close()
        client.close()


async def test_ids_per_unit_and_new_units_per_period_are_bounded(redis_clean_url: str) -> None:
    clock = Clock()
    ids = RedisIdMap(redis_clean_url, ttl=60, max_units=4, max_ids_per_unit=3, clock=clock)
    client = redis.Redis.from_url(redis_clean_url)
    try:
        await ids.add("u0", {f"lg_{i}": f"co_{i}" for i in range(10)})
        assert len(await ids.get("u0")) == 3
        await ids.add("u1", {"lg_a": "co_a"})
        await ids.add("u2", {"lg_b": "co_b"})  # 2 new units a period: refused
        assert await ids.get("u2") == {}
        assert ids.budget_refusals == 1
        await ids.add("u1", {"lg_c": "co_c"})  # a known unit still records its ids
        assert await ids.get("u1") == {"lg_a": "co_a", "lg_c": "co_c"}
        clock.now += 60  # the next period has a budget again
        await ids.add("u2", {"lg_b": "co_b"})
        assert await ids.get("u2") == {"lg_b": "co_b"}
        for key in client.scan_iter(f"{BUDGET}*"):
            assert 0 < client.ttl(key) <= 120
    finally:
        await ids.close()
        client.close()


def batch_of(clock: Clock, units: range, tax_core: int = 100,
             dropped: int = 0) -> ShadowBatch:
    recorder = ShadowRecorder(clock=clock)
    for i in units:
        legacy = {"id": "lg_1", "tax": 100, "email": "a@b.example"}
        core = {"id": "co_1", "tax": tax_core if i % 2 else 100, "email": "a@b.example"}
        results = compare(201, legacy, 201, core, ids={"lg_1": "co_1"})
        recorder.observe("hw", f"u{i}", ROUTE, results, ("lg_1", "co_1"))
    for _ in range(dropped):
        recorder.dropped("hw", "unmapped")
    return recorder.drain()


def test_replicas_pool_their_reports_in_redis(redis_clean_url: str) -> None:
    clock = Clock()
    a = RedisShadowReport(redis_clean_url, clock=clock)
    b = RedisShadowReport(redis_clean_url, clock=clock)
    memory = MemoryShadowReport(clock=clock)
    try:
        batches = [batch_of(clock, range(10), tax_core=1, dropped=2),
                   batch_of(clock, range(10, 30)), batch_of(clock, range(5, 15), tax_core=1)]
        for store, batch in zip([a, b, a], batches, strict=True):
            store.add(batch)
            memory.add(batch)
        pooled, expected = b.summary(), memory.summary()
        assert pooled == expected
        funnel = pooled["funnels"]["hw"]
        assert funnel["routes"][ROUTE]["fields"]["tax"]["mismatches"] == 10
        assert funnel["units"]["compared"] == 30
        assert funnel["units"]["with_mismatch"] == 7  # odd units of 0..9 and 5..14
        assert funnel["dropped"] == {"unmapped": 2}
    finally:
        a.close()
        b.close()


def test_every_report_key_expires_and_units_are_bounded(redis_clean_url: str) -> None:
    clock = Clock()
    store = RedisShadowReport(redis_clean_url, max_units=50, examples_per_route=5, clock=clock)
    client = redis.Redis.from_url(redis_clean_url)
    try:
        store.add(batch_of(clock, range(200), tax_core=1))
        keys = list(client.scan_iter(f"{PREFIX}:*"))
        assert keys
        for key in keys:
            assert 0 < client.ttl(key) <= store.ttl, key
        assert client.zcard(f"{PREFIX}:u:hw") == 50
        assert client.llen(f"{PREFIX}:x:hw:{ROUTE}") == 5
        examples = [json.loads(e) for e in client.lrange(f"{PREFIX}:x:hw:{ROUTE}", 0, -1)]
        assert all(e["field"] == "tax" for e in examples)
    finally:
        store.close()
        client.close()


def test_the_window_and_reset(redis_clean_url: str) -> None:
    clock = Clock()
    store = RedisShadowReport(redis_clean_url, clock=clock)
    try:
        store.add(batch_of(clock, range(4), tax_core=1))
        clock.now += 2 * 3600
        store.add(batch_of(clock, range(4, 6)))
        recent = store.summary(window=3600)["funnels"]["hw"]
        assert (recent["comparisons"], recent["mismatches"]) == (2, 0)
        assert recent["units"]["compared"] == 2
        assert store.summary()["funnels"]["hw"]["mismatches"] == 2
        store.reset("hw")
        assert store.summary()["funnels"] == {}
    finally:
        store.close()
