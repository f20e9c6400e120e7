"""Distributed mode against a real Redis: the stream adapter, the app, and a worker killed
mid-batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis

from checkout_core import downstream_fake
from checkout_core.adapters.redis_stream import RedisEventStream
from checkout_core.domain import events as ev
from checkout_core.main import create_app
from checkout_core.messaging.stream import UnknownDeadLetter
from tests.support.servers import serve

from .conftest import SettingsFactory
from .helpers import http_checkout, payment_body, wait_until
from .test_crash_restart import (
    ORDERS,
    STALL_ON,
    _place_orders,
    assert_exactly_once,
    process,
    sigkill,
    unpublished,
    worker_env,
)

pytestmark = pytest.mark.redis
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def event(n: int) -> ev.Event:
    return ev.new_event(f"co_evt_{n}", ev.ORDER_PLACED, f"co_ord_{n}", NOW, {"n": n})


@pytest.fixture
async def stream(redis_clean_url: str) -> AsyncIterator[RedisEventStream]:
    s = RedisEventStream.from_url(redis_clean_url, "test", 60)
    await s.ensure_group("g")
    yield s
    await s.close()


async def test_a_group_reads_new_messages_once_and_acks_with_a_processed_key(
    stream: RedisEventStream,
) -> None:
    await stream.publish([event(1), event(2)])
    messages = await stream.read("g", "c1", 10, 0.01)
    assert [m.event.id for m in messages if m.event] == ["co_evt_1", "co_evt_2"]
    assert await stream.read("g", "c2", 10, 0.01) == []
    assert await stream.lag("g") == 2
    await stream.ack("g", messages[0], messages[0].event.idempotency_key)  # type: ignore[union-attr]
    assert await stream.is_processed("g", "order.placed:co_ord_1")
    assert not await stream.is_processed("g", "order.placed:co_ord_2")
    assert await stream.lag("g") == 1


async def test_ensure_group_is_idempotent_and_reads_from_the_start(
    stream: RedisEventStream,
) -> None:
    await stream.publish([event(1)])
    await stream.ensure_group("late")
    await stream.ensure_group("late")
    assert len(await stream.read("late", "c", 10, 0.01)) == 1


async def test_stale_messages_are_claimed_with_their_delivery_count(
    stream: RedisEventStream,
) -> None:
    await stream.publish([event(1), event(2)])
    await stream.read("g", "dead", 10, 0.01)
    assert await stream.claim_stale("g", "alive", 60, 10) == []
    claimed = await stream.claim_stale("g", "alive", 0, 10)
    assert [m.deliveries for m in claimed] == [2, 2]
    assert [m.deliveries for m in await stream.claim_stale("g", "alive", 0, 1)] == [3]


async def test_park_list_and_replay(stream: RedisEventStream) -> None:
    await stream.publish([event(1), event(2)])
    first, second = await stream.read("g", "c", 10, 0.01)
    await stream.park("g", first, "boom", 5)
    await stream.park("g", second, "bang", 1)
    assert await stream.lag("g") == 0
    letters = await stream.dead_letters()
    assert [(d.error, d.attempts, d.group) for d in letters] == [("boom", 5, "g"), ("bang", 1, "g")]
    with pytest.raises(UnknownDeadLetter):
        await stream.replay([letters[0].id, "0-1"])
    assert await stream.dlq_size() == 2
    assert await stream.replay([letters[0].id]) == [letters[0].id]
    [replayed] = await stream.read("g", "c", 10, 0.01)
    assert replayed.event == first.event
    assert await stream.replay(None) == [letters[1].id]
    assert await stream.dlq_size() == 0


async def test_a_missing_group_is_created_on_read(redis_clean_url: str) -> None:
    s = RedisEventStream.from_url(redis_clean_url, "fresh", 60)
    try:
        assert await s.read("g", "c", 10, 0.01) == []
        await s.publish([event(1)])
        assert len(await s.read("g", "c", 10, 0.01)) == 1
    finally:
        await s.close()


def test_the_app_in_distributed_mode_syncs_orders_through_redis(
    make_settings: SettingsFactory, redis_clean_url: str,
) -> None:
    app = create_app(make_settings(redis_url=redis_clean_url, redis_prefix="app"))
    with serve(app) as server, httpx.Client(base_url=server.url) as client:
        order = client.post(f"/checkouts/{http_checkout(client)}/orders", json=payment_body(),
                            headers={"Idempotency-Key": "r1"}).json()
        wait_until(lambda: [o["order_id"] for o in client.get("/_downstream/orders")
                            .json()["orders"]] == [order["id"]], 5, message="the order")
        wait_until(lambda: 'checkout_core_consumer_lag_messages{group="order-sync"} 0.0'
                   in client.get("/metrics").text, 5, message="no consumer lag")
    r = redis.Redis.from_url(redis_clean_url, decode_responses=True)
    try:
        types = [fields["body"] for _, fields in r.xrange("app:events")]
        assert any('"type":"order.placed"' in body for body in types)
        assert r.exists(f"app:processed:order-sync:order.placed:{order['id']}")
    finally:
        r.close()


def test_a_worker_killed_mid_batch_on_redis_loses_nothing_and_duplicates_nothing(
    make_settings: SettingsFactory, db_path: Path, tmp_path: Path, redis_clean_url: str,
) -> None:
    order_ids = asyncio.run(_place_orders(make_settings(), ORDERS))
    state = downstream_fake.DownstreamState(stall_on_delivery=STALL_ON)
    r = redis.Redis.from_url(redis_clean_url, decode_responses=True)

    def settled() -> bool:
        groups = r.xinfo_groups("checkout_core:events")
        group = next(g for g in groups if g["name"] == "order-sync")
        return unpublished(db_path) == 0 and group["pending"] == 0 and group["lag"] == 0

    try:
        with serve(downstream_fake.create_app(state)) as downstream:
            env = worker_env(db_path, downstream.url, CHECKOUT_CORE_REDIS_URL=redis_clean_url)
            args = ["-m", "checkout_core.worker"]
            with process(args, env, tmp_path / "worker.log") as first:
                wait_until(lambda: state.requests >= STALL_ON, 15, message="the stall")
                sigkill(first)
            state.release()
            with process(args, env, tmp_path / "worker.log"):
                wait_until(lambda: len(state.snapshot()) == ORDERS and settled(), 15,
                           message="every order delivered")
    finally:
        r.close()
    assert_exactly_once(state, order_ids)
