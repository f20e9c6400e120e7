"""The embedded event stream: consumer groups, pending entries, claims, processed keys, DLQ."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from checkout_core.adapters.sqlite_db import SqliteDatabase
from checkout_core.adapters.sqlite_stream import SqliteEventStream
from checkout_core.domain import events as ev
from checkout_core.messaging.stream import UnknownDeadLetter

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def event(n: int, type_: str = ev.ORDER_PLACED) -> ev.Event:
    return ev.new_event(f"co_evt_{n}", type_, f"co_ord_{n}", NOW, {"order_id": f"co_ord_{n}"})


@pytest.fixture
def stream(db_path: object) -> SqliteEventStream:
    db = SqliteDatabase(db_path)  # type: ignore[arg-type]
    db.initialize()
    return SqliteEventStream(db, poll_seconds=0.01)


async def test_a_group_reads_each_message_once_in_order(stream: SqliteEventStream) -> None:
    await stream.publish([event(1), event(2), event(3)])
    first = await stream.read("g", "c1", 2, 0)
    second = await stream.read("g", "c2", 10, 0)
    assert [m.event.id for m in first + second if m.event] == ["co_evt_1", "co_evt_2", "co_evt_3"]
    assert await stream.read("g", "c1", 10, 0) == []
    assert await stream.lag("g") == 3  # delivered but not acknowledged


async def test_groups_are_independent(stream: SqliteEventStream) -> None:
    await stream.publish([event(1)])
    assert len(await stream.read("a", "c", 10, 0)) == 1
    assert len(await stream.read("b", "c", 10, 0)) == 1


async def test_read_blocks_until_a_publish_or_the_timeout(stream: SqliteEventStream) -> None:
    started = time.monotonic()
    assert await stream.read("g", "c", 10, 0.05) == []
    assert time.monotonic() - started >= 0.05
    reader = asyncio.create_task(stream.read("g", "c", 10, 5))
    await asyncio.sleep(0.02)
    await stream.publish([event(1)])
    assert len(await asyncio.wait_for(reader, 2)) == 1


async def test_ack_records_the_processed_key_and_clears_the_lag(stream: SqliteEventStream) -> None:
    await stream.publish([event(1)])
    [message] = await stream.read("g", "c", 10, 0)
    assert not await stream.is_processed("g", "order.placed:co_ord_1")
    await stream.ack("g", message, "order.placed:co_ord_1")
    assert await stream.is_processed("g", "order.placed:co_ord_1")
    assert not await stream.is_processed("other", "order.placed:co_ord_1")
    assert await stream.lag("g") == 0


async def test_unacked_messages_are_claimed_after_the_idle_time_with_a_delivery_count(
    stream: SqliteEventStream,
) -> None:
    await stream.publish([event(1), event(2)])
    await stream.read("g", "dead", 10, 0)
    assert await stream.claim_stale("g", "alive", 60, 10) == []
    claimed = await stream.claim_stale("g", "alive", 0, 10)
    assert [(m.id, m.deliveries) for m in claimed] == [("1", 2), ("2", 2)]
    again = await stream.claim_stale("g", "alive", 0, 1)
    assert [(m.id, m.deliveries) for m in again] == [("1", 3)]


async def test_park_moves_to_the_dead_letters_and_replay_puts_it_back(
    stream: SqliteEventStream,
) -> None:
    await stream.publish([event(1), event(2)])
    first, second = await stream.read("g", "c", 10, 0)
    await stream.park("g", first, "boom", 5)
    await stream.park("g", second, "bang", 5)
    assert await stream.lag("g") == 0
    letters = await stream.dead_letters()
    assert [(d.error, d.attempts, d.event and d.event.id) for d in letters] == \
        [("boom", 5, "co_evt_1"), ("bang", 5, "co_evt_2")]
    assert await stream.dlq_size() == 2
    assert await stream.replay([letters[1].id]) == [letters[1].id]
    assert await stream.dlq_size() == 1
    [replayed] = await stream.read("g", "c", 10, 0)
    assert replayed.event == second.event


async def test_replay_of_an_unknown_id_replays_nothing(stream: SqliteEventStream) -> None:
    await stream.publish([event(1)])
    [message] = await stream.read("g", "c", 10, 0)
    await stream.park("g", message, "boom", 1)
    [letter] = await stream.dead_letters()
    with pytest.raises(UnknownDeadLetter):
        await stream.replay([letter.id, "co_dlq_nope"])
    assert await stream.dlq_size() == 1
    assert await stream.replay(None) == [letter.id]
    assert await stream.replay(None) == []


async def test_an_undecodable_body_is_delivered_without_an_event(
    stream: SqliteEventStream,
) -> None:
    await stream.db.run(lambda conn: conn.execute(
        "INSERT INTO stream_messages (event_id, body, added_epoch) VALUES ('x', 'garbage', 0)"))
    [message] = await stream.read("g", "c", 10, 0)
    assert message.event is None and message.body == "garbage"
