"""The event stream port on Redis Streams (distributed mode).

Keys (under a prefix): `<p>:events` the stream, read by consumer groups (XREADGROUP, XACK,
XAUTOCLAIM for messages orphaned by crashed consumers); `<p>:dlq` the dead-letter stream;
`<p>:processed:<group>:<key>` processed idempotency keys (with a TTL). Acknowledging with a
processed key, and parking, are MULTI/EXEC transactions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from checkout_core.domain import events as ev
from checkout_core.ids import utc_now
from checkout_core.messaging.stream import DeadLetter, StreamMessage, UnknownDeadLetter

Entry = tuple[str, dict[str, str]]


def _decode(body: str) -> ev.Event | None:
    try:
        return ev.decode(body)
    except (ValueError, KeyError, TypeError):
        return None


def _message(entry: Entry, deliveries: int) -> StreamMessage:
    message_id, fields = entry
    body = fields.get("body", "")
    return StreamMessage(message_id, body, _decode(body), deliveries)


def _fields(event_id: str, body: str) -> dict[str, str]:
    return {"event_id": event_id, "body": body}


class RedisEventStream:
    def __init__(self, client: aioredis.Redis, prefix: str, processed_ttl_seconds: int) -> None:
        self.client = client
        self.stream = f"{prefix}:events"
        self.dlq = f"{prefix}:dlq"
        self.prefix = prefix
        self.processed_ttl = processed_ttl_seconds

    @classmethod
    def from_url(cls, url: str, prefix: str, processed_ttl_seconds: int) -> RedisEventStream:
        client = aioredis.Redis.from_url(url, decode_responses=True)
        return cls(client, prefix, processed_ttl_seconds)

    def _processed(self, group: str, key: str) -> str:
        return f"{self.prefix}:processed:{group}:{key}"

    async def publish(self, events: Sequence[ev.Event]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.xadd(self.stream, _fields(event.id, ev.encode(event)))  # type: ignore[arg-type]
            await pipe.execute()

    async def ensure_group(self, group: str) -> None:
        try:
            await self.client.xgroup_create(self.stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(
        self, group: str, consumer: str, count: int, block_seconds: float
    ) -> list[StreamMessage]:
        block_ms = max(1, int(block_seconds * 1000)) if block_seconds > 0 else None
        try:
            reply: Any = await self.client.xreadgroup(
                group, consumer, {self.stream: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group(group)
            return []
        return [_message(entry, 1) for _, entries in reply or [] for entry in entries]

    async def claim_stale(
        self, group: str, consumer: str, min_idle_seconds: float, count: int
    ) -> list[StreamMessage]:
        reply: list[Any] = await self.client.xautoclaim(
            self.stream, group, consumer, int(min_idle_seconds * 1000), "0-0", count=count
        )
        entries: list[Entry] = [e for e in reply[1] if e and e[1] is not None]
        deleted = list(reply[2]) if len(reply) > 2 else []
        if deleted:
            await self.client.xack(self.stream, group, *deleted)
        if not entries:
            return []
        pending = await self.client.xpending_range(
            self.stream, group, entries[0][0], entries[-1][0], len(entries) * 2, consumer
        )
        counts = {p["message_id"]: int(p["times_delivered"]) for p in pending}
        return [_message(entry, counts.get(entry[0], 2)) for entry in entries]

    async def is_processed(self, group: str, idempotency_key: str) -> bool:
        return bool(await self.client.exists(self._processed(group, idempotency_key)))

    async def ack(self, group: str, message: StreamMessage, processed_key: str | None) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            if processed_key is not None:
                pipe.set(self._processed(group, processed_key), "1", ex=self.processed_ttl)
            pipe.xack(self.stream, group, message.id)
            await pipe.execute()

    async def park(self, group: str, message: StreamMessage, error: str, attempts: int) -> None:
        fields = {
            "group": group, "message_id": message.id, "body": message.body, "error": error,
            "attempts": str(attempts), "parked_at": ev.format_time(utc_now()),
        }
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dlq, fields)  # type: ignore[arg-type]
            pipe.xack(self.stream, group, message.id)
            await pipe.execute()

    async def lag(self, group: str) -> int:
        try:
            groups = await self.client.xinfo_groups(self.stream)
        except ResponseError:
            return 0
        for info in groups:
            if info["name"] == group:
                return int(info.get("lag") or 0) + int(info.get("pending") or 0)
        return int(await self.client.xlen(self.stream))

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        entries: list[Entry] | None = await self.client.xrange(  # type: ignore[assignment]
            self.dlq, count=limit
        )
        return [_dead_letter(entry) for entry in entries or []]

    async def dlq_size(self) -> int:
        return int(await self.client.xlen(self.dlq))

    async def replay(self, ids: Sequence[str] | None) -> list[str]:
        found: list[Entry] | None = await self.client.xrange(self.dlq)  # type: ignore[assignment]
        entries = found or []
        by_id = dict(entries)
        chosen = list(by_id) if ids is None else list(dict.fromkeys(ids))
        missing = [i for i in chosen if i not in by_id]
        if missing:
            raise UnknownDeadLetter(f"no waiting dead letter {', '.join(missing)}")
        if not chosen:
            return []
        async with self.client.pipeline(transaction=True) as pipe:
            for dead_id in chosen:
                body = by_id[dead_id]["body"]
                event = _decode(body)
                pipe.xadd(self.stream, _fields(event.id if event else "undecodable", body))  # type: ignore[arg-type]
            pipe.xdel(self.dlq, *chosen)
            await pipe.execute()
        return chosen

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()


def _dead_letter(entry: Entry) -> DeadLetter:
    dead_id, fields = entry
    return DeadLetter(
        id=dead_id, group=fields.get("group", ""), message_id=fields.get("message_id", ""),
        body=fields.get("body", ""), event=_decode(fields.get("body", "")),
        error=fields.get("error", ""), attempts=int(fields.get("attempts", "0")),
        parked_at=_parked_at(fields.get("parked_at")),
    )


def _parked_at(text: str | None) -> datetime:
    return ev.parse_time(text) if text else utc_now()


