"""Sticky assignments shared through Redis, and what happens while Redis is down."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest
import redis

from control.decision import Backend
from proxy.sticky_redis import BUDGET, KEY, RedisSticky


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CountingGets:
    """Counts the Redis GETs a store sends, and passes them on."""

    def __init__(self, store: RedisSticky) -> None:
        self.calls = 0
        self._get = store.client.get
        store.client.get = self  # type: ignore[method-assign]

    def __call__(self, key: str):  # type: ignore[no-untyped-def]
        self.calls += 1
        return self._get(key)


async def test_replicas_share_assignments_through_redis(redis_clean_url: str) -> None:
    a = RedisSticky(redis_clean_url, 1000)
    b = RedisSticky(redis_clean_url, 1000)
    try:
        await a.set("warranties:u1", Backend.CORE, 60)
        await asyncio.wait(a._pending, timeout=2)
        assert await b.get("warranties:u1") is Backend.CORE  # b's LRU missed: read Redis
        await b.release("warranties:u1")
        await asyncio.wait(b._pending, timeout=2)
        assert await b.get("warranties:u1") is None
        c = RedisSticky(redis_clean_url, 1000)
        assert await c.get("warranties:u1") is None  # gone from Redis too
        await c.close()
    finally:
        await a.close()
        await b.close()


async def test_while_redis_is_down_one_probe_per_cooldown_and_local_assignments_hold(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RedisSticky(f"redis://127.0.0.1:{closed_port()}/0", 1000, cooldown=0.3)
    gets = CountingGets(store)
    try:
        with caplog.at_level(logging.WARNING, logger="strangler.sticky"):
            assert await store.get("f:a") is None  # refused: counts as no assignment
        assert gets.calls == 1
        assert "local assignments only" in caplog.text
        for i in range(50):  # inside the cooldown: Redis is not asked again
            assert await store.get(f"f:b{i}") is None
        await store.set("f:c", Backend.CORE, 60)  # no write task while failing
        assert not store._pending
        assert await store.get("f:c") is Backend.CORE  # the local LRU serves alone
        assert gets.calls == 1
        await asyncio.sleep(0.35)
        results = [await store.get(f"f:d{i}") for i in range(10)]
        assert results == [None] * 10
        assert gets.calls == 2  # one probe after the cooldown, the rest skipped
    finally:
        await store.close()


async def test_the_store_uses_redis_again_once_it_answers(redis_clean_url: str) -> None:
    store = RedisSticky(redis_clean_url, 1000, cooldown=0.2)
    other = RedisSticky(redis_clean_url, 1000)
    try:
        store._failed(ConnectionError("simulated outage"))
        await other.set("f:x", Backend.LEGACY, 60)
        await asyncio.wait(other._pending, timeout=2)
        assert await store.get("f:x") is None  # still in its cooldown
        await asyncio.sleep(0.25)
        assert await store.get("f:x") is Backend.LEGACY  # the probe succeeded
        assert not store._failing
        await store.set("f:y", Backend.CORE, 60)  # writes flow again
        await asyncio.wait(store._pending, timeout=2)
        assert await other.get("f:y") is Backend.CORE
    finally:
        await store.close()
        await other.close()


async def settle(store: RedisSticky) -> None:
    if store._pending:
        await asyncio.wait(store._pending, timeout=10)


async def test_redis_holds_no_more_sticky_assignments_than_the_bound(redis_clean_url: str) -> None:
    store = RedisSticky(redis_clean_url, 10_000, timeout=1.0, redis_max_units=2000)
    client = redis.Redis.from_url(redis_clean_url, decode_responses=True)
    try:
        for i in range(3000):  # 3,000 checkouts starting within one period
            await store.set(f"warranties:u{i:05d}", Backend.CORE, 3600)
            if i % 100 == 99:
                await settle(store)
        await settle(store)
        keys = list(client.scan_iter(KEY + "*"))
        assert 1000 <= len(keys) <= 2000  # 1,000 a period: 2,000 across a period's end
        assert all(0 < client.ttl(k) <= 3600 for k in keys)
        assert all(store.local.get_local(f"warranties:u{i:05d}") is Backend.CORE
                   for i in range(3000))  # each replica still holds all of its own

        budget = f"{BUDGET}3600:{int(time.time() // 3600)}"
        spent = int(client.get(budget) or 0)
        written = keys[0].removeprefix(KEY)
        await store.set(written, Backend.CORE, 3600)  # fresh already: nothing to write
        await settle(store)
        assert int(client.get(budget) or 0) == spent
        assert 0 < client.ttl(budget) <= 7200
    finally:
        client.close()
        await store.close()
