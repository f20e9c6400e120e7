"""The event stream port on the SQLite file (embedded mode).

`stream_messages` is the log; `stream_groups` holds each group's last delivered sequence;
`stream_pending` is the pending-entries list (delivered, not acked) with delivery counts;
`processed_messages` and `dead_letters` belong to the consumers. Every method is one
transaction, so acknowledging and recording a processed key (or parking) is atomic.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Sequence

from checkout_core.adapters.sqlite_db import SqliteDatabase
from checkout_core.adapters.sqlite_store import from_iso, iso
from checkout_core.domain import events as ev
from checkout_core.ids import DEAD_LETTER, new_id, utc_now
from checkout_core.messaging.stream import DeadLetter, StreamMessage, UnknownDeadLetter

POLL_SECONDS = 0.05


def _decode(body: str) -> ev.Event | None:
    try:
        return ev.decode(body)
    except (ValueError, KeyError, TypeError):
        return None


def _append(conn: sqlite3.Connection, rows: Sequence[tuple[str, str]]) -> None:
    now = time.time()
    conn.executemany(
        "INSERT INTO stream_messages (event_id, body, added_epoch) VALUES (?, ?, ?)",
        [(event_id, body, now) for event_id, body in rows],
    )


class SqliteEventStream:
    def __init__(self, db: SqliteDatabase, poll_seconds: float = POLL_SECONDS) -> None:
        self.db = db
        self.poll_seconds = poll_seconds
        self._published: asyncio.Event | None = None

    def _signal(self) -> asyncio.Event:
        if self._published is None:
            self._published = asyncio.Event()
        return self._published

    async def publish(self, events: Sequence[ev.Event]) -> None:
        rows = [(e.id, ev.encode(e)) for e in events]
        await self.db.run(lambda conn: _append(conn, rows))
        self._signal().set()

    async def ensure_group(self, group: str) -> None:
        await self.db.run(lambda conn: self._ensure_group(conn, group))

    @staticmethod
    def _ensure_group(conn: sqlite3.Connection, group: str) -> None:
        conn.execute(
            "INSERT INTO stream_groups (name, last_seq) VALUES (?, 0) ON CONFLICT DO NOTHING",
            (group,),
        )

    async def read(
        self, group: str, consumer: str, count: int, block_seconds: float
    ) -> list[StreamMessage]:
        deadline = time.monotonic() + block_seconds
        while True:
            signal = self._signal()
            signal.clear()
            messages = await self.db.run(lambda conn: self._read(conn, group, consumer, count))
            remaining = deadline - time.monotonic()
            if messages or remaining <= 0:
                return messages
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signal.wait(), min(remaining, self.poll_seconds))

    def _read(
        self, conn: sqlite3.Connection, group: str, consumer: str, count: int
    ) -> list[StreamMessage]:
        self._ensure_group(conn, group)
        rows = conn.execute(
            "SELECT seq, body FROM stream_messages WHERE seq > "
            "(SELECT last_seq FROM stream_groups WHERE name = ?) ORDER BY seq LIMIT ?",
            (group, count),
        ).fetchall()
        if not rows:
            return []
        now = time.time()
        conn.executemany(
            "INSERT INTO stream_pending (group_name, seq, consumer, delivered_epoch, deliveries)"
            " VALUES (?, ?, ?, ?, 1)",
            [(group, row["seq"], consumer, now) for row in rows],
        )
        conn.execute(
            "UPDATE stream_groups SET last_seq = ? WHERE name = ?", (rows[-1]["seq"], group)
        )
        return [StreamMessage(str(r["seq"]), r["body"], _decode(r["body"]), 1) for r in rows]

    async def claim_stale(
        self, group: str, consumer: str, min_idle_seconds: float, count: int
    ) -> list[StreamMessage]:
        def work(conn: sqlite3.Connection) -> list[StreamMessage]:
            now = time.time()
            rows = conn.execute(
                "SELECT p.seq, p.deliveries, m.body FROM stream_pending p"
                " JOIN stream_messages m ON m.seq = p.seq"
                " WHERE p.group_name = ? AND p.delivered_epoch <= ? ORDER BY p.seq LIMIT ?",
                (group, now - min_idle_seconds, count),
            ).fetchall()
            conn.executemany(
                "UPDATE stream_pending SET consumer = ?, delivered_epoch = ?,"
                " deliveries = deliveries + 1 WHERE group_name = ? AND seq = ?",
                [(consumer, now, group, row["seq"]) for row in rows],
            )
            return [
                StreamMessage(str(r["seq"]), r["body"], _decode(r["body"]), r["deliveries"] + 1)
                for r in rows
            ]

        return await self.db.run(work)

    async def is_processed(self, group: str, idempotency_key: str) -> bool:
        row = await self.db.run(
            lambda conn: conn.execute(
                "SELECT 1 FROM processed_messages WHERE group_name = ? AND idempotency_key = ?",
                (group, idempotency_key),
            ).fetchone(),
            write=False,
        )
        return row is not None

    async def ack(self, group: str, message: StreamMessage, processed_key: str | None) -> None:
        def work(conn: sqlite3.Connection) -> None:
            if processed_key is not None:
                conn.execute(
                    "INSERT INTO processed_messages (group_name, idempotency_key, processed_at)"
                    " VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (group, processed_key, iso(utc_now())),
                )
            self._ack(conn, group, message)

        await self.db.run(work)

    @staticmethod
    def _ack(conn: sqlite3.Connection, group: str, message: StreamMessage) -> None:
        conn.execute(
            "DELETE FROM stream_pending WHERE group_name = ? AND seq = ?", (group, int(message.id))
        )

    async def park(self, group: str, message: StreamMessage, error: str, attempts: int) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO dead_letters (id, group_name, message_id, body, error, attempts,"
                " parked_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (new_id(DEAD_LETTER), group, message.id, message.body, error, attempts,
                 iso(utc_now())),
            )
            self._ack(conn, group, message)

        await self.db.run(work)

    async def lag(self, group: str) -> int:
        def work(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM stream_messages WHERE seq >"
                " coalesce((SELECT last_seq FROM stream_groups WHERE name = :g), 0))"
                " + (SELECT count(*) FROM stream_pending WHERE group_name = :g)",
                {"g": group},
            ).fetchone()
            return int(row[0])

        return await self.db.run(work, write=False)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = await self.db.run(
            lambda conn: conn.execute(
                "SELECT * FROM dead_letters WHERE replayed_at IS NULL ORDER BY parked_at, id"
                " LIMIT ?",
                (limit,),
            ).fetchall(),
            write=False,
        )
        return [_dead_letter(row) for row in rows]

    async def dlq_size(self) -> int:
        row = await self.db.run(
            lambda conn: conn.execute(
                "SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL"
            ).fetchone(),
            write=False,
        )
        return int(row[0])

    async def replay(self, ids: Sequence[str] | None) -> list[str]:
        replayed = await self.db.run(lambda conn: self._replay(conn, ids))
        if replayed:
            self._signal().set()
        return replayed

    @staticmethod
    def _replay(conn: sqlite3.Connection, ids: Sequence[str] | None) -> list[str]:
        waiting = conn.execute(
            "SELECT id, body FROM dead_letters WHERE replayed_at IS NULL ORDER BY parked_at, id"
        ).fetchall()
        by_id = {row["id"]: row for row in waiting}
        chosen = list(by_id) if ids is None else list(dict.fromkeys(ids))
        missing = [i for i in chosen if i not in by_id]
        if missing:
            raise UnknownDeadLetter(f"no waiting dead letter {', '.join(missing)}")
        rows = [by_id[i] for i in chosen]
        _append(conn, [(_event_id(r["body"]), r["body"]) for r in rows])
        conn.executemany(
            "UPDATE dead_letters SET replayed_at = ? WHERE id = ?",
            [(iso(utc_now()), i) for i in chosen],
        )
        return chosen

    async def ping(self) -> None:
        await self.db.ping()

    async def close(self) -> None:
        return None


def _event_id(body: str) -> str:
    event = _decode(body)
    return event.id if event is not None else "undecodable"


def _dead_letter(row: sqlite3.Row) -> DeadLetter:
    return DeadLetter(
        id=row["id"], group=row["group_name"], message_id=row["message_id"], body=row["body"],
        event=_decode(row["body"]), error=row["error"], attempts=row["attempts"],
        parked_at=from_iso(row["parked_at"]),
    )


