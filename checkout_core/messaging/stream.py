"""The event stream port: an append-only log read by consumer groups, at least once.

Modelled on Redis Streams. Adapters: `SqliteEventStream` (embedded) and `RedisEventStream`
(distributed). Consumers record the idempotency keys they processed in the same step that
acknowledges the message, and poison messages are parked in a dead-letter store, atomically
with their acknowledgement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from checkout_core.domain.events import Event


@dataclass(frozen=True, slots=True)
class StreamMessage:
    id: str
    body: str
    event: Event | None
    """None when the body does not decode: a poison message."""
    deliveries: int
    """How many times the group delivered this message (1 the first time)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    group: str
    message_id: str
    body: str
    event: Event | None
    error: str
    attempts: int
    parked_at: datetime


class UnknownDeadLetter(KeyError):
    pass


class EventStream(Protocol):
    async def publish(self, events: Sequence[Event]) -> None: ...
    async def ensure_group(self, group: str) -> None: ...

    async def read(
        self, group: str, consumer: str, count: int, block_seconds: float
    ) -> list[StreamMessage]:
        """New messages for the group, waiting up to `block_seconds` when there are none."""
        ...

    async def claim_stale(
        self, group: str, consumer: str, min_idle_seconds: float, count: int
    ) -> list[StreamMessage]:
        """Messages delivered (to anyone) at least `min_idle_seconds` ago and never acked."""
        ...

    async def is_processed(self, group: str, idempotency_key: str) -> bool: ...

    async def ack(self, group: str, message: StreamMessage, processed_key: str | None) -> None:
        """Acknowledge, recording `processed_key` as processed in the same atomic step."""
        ...

    async def park(self, group: str, message: StreamMessage, error: str, attempts: int) -> None:
        """Move to the dead-letter store and acknowledge, atomically."""
        ...

    async def lag(self, group: str) -> int:
        """Messages the group has not acknowledged yet (never delivered + pending)."""
        ...

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]: ...
    async def dlq_size(self) -> int: ...

    async def replay(self, ids: Sequence[str] | None) -> list[str]:
        """Re-publish dead letters (`None`: all) and remove them from the store; their ids.

        Raises `UnknownDeadLetter` (and replays nothing) when an id is not waiting."""
        ...

    async def ping(self) -> None: ...
    async def close(self) -> None: ...
