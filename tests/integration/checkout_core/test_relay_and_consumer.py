"""The outbox relay and the order sync consumer on the embedded stream, with the fake
downstream reached through the real HTTP adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

import httpx
import pytest

from checkout_core import downstream_fake
from checkout_core.bootstrap import Core
from checkout_core.domain import events as ev
from checkout_core.messaging.downstream import HttpDownstream
from checkout_core.messaging.order_sync import ConsumerConfig, OrderSyncConsumer
from checkout_core.messaging.relay import OutboxRelay
from checkout_core.messaging.stream import EventStream
from checkout_core.retry import Backoff

from .helpers import open_checkout, place

MakeCore = Callable[..., Core]


class Fixture:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.state = downstream_fake.DownstreamState()
        app = downstream_fake.create_app(self.state)
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                        base_url="http://downstream")
        self.outcomes: list[str] = []

    def consumer(self, attempts: int = 3, max_deliveries: int = 5,
                 stream: EventStream | None = None) -> OrderSyncConsumer:
        config = ConsumerConfig("order-sync", "c1", 50, 0.0, Backoff(attempts, 0.001, 0.002),
                                max_deliveries, claim_idle_seconds=0.0)
        return OrderSyncConsumer(stream or self.core.stream, HttpDownstream(self.client), config,
                                 observe=lambda group, outcome: self.outcomes.append(outcome))

    async def orders(self, n: int) -> list[str]:
        ids = []
        for i in range(n):
            checkout = await open_checkout(self.core)
            ids.append((await place(self.core, checkout.id, f"k{i}")).id)
        return ids

    async def drain(self, consumer: OrderSyncConsumer) -> None:
        await self.core.relay.drain()
        while await consumer.run_once(block_seconds=0):
            pass

    def delivered(self) -> dict[str, int]:
        return {o.order["order_id"]: o.deliveries for o in self.state.snapshot().values()}


@pytest.fixture
async def fx(make_core: MakeCore) -> AsyncIterator[Fixture]:
    fixture = Fixture(make_core())
    yield fixture
    await fixture.client.aclose()


async def test_relay_publishes_in_order_and_marks_the_outbox(fx: Fixture) -> None:
    await fx.orders(2)
    lag = await fx.core.relay.store.run(lambda uow: uow.outbox.lag(ev.parse_time(
        "2100-01-01T00:00:00Z")), write=False)
    assert lag.unpublished > 0
    assert await fx.core.relay.drain() == lag.unpublished
    assert await fx.core.relay.run_once() == 0
    messages = await fx.core.stream.read("audit", "a", 100, 0)
    published = [m.event.type for m in messages if m.event]
    outbox = await fx.core.db.run(lambda c: [r[0] for r in c.execute(
        "SELECT type FROM outbox ORDER BY seq")], write=False)
    assert published == outbox


async def test_each_placed_order_reaches_the_downstream_once(fx: Fixture) -> None:
    ids = await fx.orders(3)
    await fx.drain(fx.consumer())
    assert fx.delivered() == {order_id: 1 for order_id in ids}
    assert fx.outcomes.count("delivered") == 3 and "skipped" in fx.outcomes
    assert await fx.core.stream.lag("order-sync") == 0


async def test_a_relay_crash_between_publish_and_mark_duplicates_nothing_downstream(
    fx: Fixture,
) -> None:
    class CrashAfterPublish:
        def __init__(self, inner: EventStream) -> None:
            self.inner = inner

        async def publish(self, events: Sequence[ev.Event]) -> None:
            await self.inner.publish(events)
            raise RuntimeError("relay died before marking the batch")

    ids = await fx.orders(3)
    crashing = OutboxRelay(fx.core.relay.store, CrashAfterPublish(fx.core.stream),  # type: ignore[arg-type]
                           fx.core.relay.clock, batch_size=4)
    with pytest.raises(RuntimeError):
        await crashing.run_once()
    await fx.drain(fx.consumer())  # the real relay publishes everything (that batch again)
    assert fx.delivered() == {order_id: 1 for order_id in ids}
    assert fx.state.requests == 3
    assert "duplicate" in fx.outcomes


async def test_failures_are_retried_with_backoff_then_delivered(fx: Fixture) -> None:
    [order_id] = await fx.orders(1)
    fx.state.fail_next = 2
    await fx.drain(fx.consumer(attempts=3))
    assert fx.delivered() == {order_id: 1}
    assert fx.outcomes.count("retried") == 2


async def test_after_n_attempts_a_message_is_parked_and_a_replay_delivers_it(fx: Fixture) -> None:
    [order_id] = await fx.orders(1)
    fx.state.fail_next = 3
    consumer = fx.consumer(attempts=3)
    await fx.drain(consumer)
    assert fx.delivered() == {}
    [letter] = await fx.core.stream.dead_letters()
    assert letter.attempts == 3 and "503" in letter.error
    assert letter.event is not None and letter.event.aggregate_id == order_id
    assert await fx.core.stream.lag("order-sync") == 0
    await fx.core.stream.replay([letter.id])
    await fx.drain(consumer)
    assert fx.delivered() == {order_id: 1}
    assert await fx.core.stream.dlq_size() == 0


async def test_a_rejected_message_is_parked_at_once(fx: Fixture) -> None:
    [order_id] = await fx.orders(1)
    fx.state.reject_keys = {f"order.placed:{order_id}"}
    await fx.drain(fx.consumer(attempts=5))
    [letter] = await fx.core.stream.dead_letters()
    assert letter.attempts == 1 and "rejected" in letter.error
    assert fx.state.requests == 1


async def test_a_message_delivered_too_often_is_parked_unprocessed(fx: Fixture) -> None:
    await fx.orders(1)
    await fx.core.relay.drain()
    stream = fx.core.stream
    await stream.read("order-sync", "crashed", 50, 0)
    for _ in range(3):  # three consumers died holding it
        await stream.claim_stale("order-sync", "crashed", 0, 50)
    await fx.drain(fx.consumer(max_deliveries=3))
    dead = [d for d in await stream.dead_letters() if d.event and d.event.type == ev.ORDER_PLACED]
    assert len(dead) == 1 and "delivered 5 times" in dead[0].error
    assert fx.state.requests == 0


async def test_an_undecodable_message_is_parked(fx: Fixture) -> None:
    await fx.core.db.run(lambda conn: conn.execute(
        "INSERT INTO stream_messages (event_id, body, added_epoch) VALUES ('x', '{', 0)"))
    await fx.drain(fx.consumer())
    [letter] = await fx.core.stream.dead_letters()
    assert letter.error == "undecodable message body" and letter.event is None
