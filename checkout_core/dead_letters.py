"""Dead letters for operators: list them and replay them into the event stream.

Library functions behind `strangler events`; they open the same store the core uses (the
SQLite file in embedded mode, Redis Streams when a Redis URL is set).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from checkout_core.bootstrap import open_event_stream
from checkout_core.config import CoreSettings
from checkout_core.domain.events import format_time
from checkout_core.messaging.stream import DeadLetter, EventStream, UnknownDeadLetter

__all__ = ["UnknownDeadLetter", "dead_letter_json", "list_dead_letters", "replay_dead_letters"]


@asynccontextmanager
async def _stream(settings: CoreSettings) -> AsyncIterator[EventStream]:
    stream = open_event_stream(settings)
    try:
        yield stream
    finally:
        await stream.close()


async def list_dead_letters(settings: CoreSettings, limit: int = 1000) -> list[DeadLetter]:
    async with _stream(settings) as stream:
        return await stream.dead_letters(limit)


async def replay_dead_letters(settings: CoreSettings, ids: Sequence[str] | None) -> list[str]:
    """Replay the given dead letters (None: all of them); the ids replayed.

    Raises `UnknownDeadLetter` and replays nothing if an id is not waiting."""
    async with _stream(settings) as stream:
        return await stream.replay(ids)


def dead_letter_json(letter: DeadLetter) -> dict[str, Any]:
    event = letter.event
    return {
        "id": letter.id, "group": letter.group, "message_id": letter.message_id,
        "event_id": event.id if event else None, "type": event.type if event else None,
        "idempotency_key": event.idempotency_key if event else None,
        "error": letter.error, "attempts": letter.attempts,
        "parked_at": format_time(letter.parked_at),
    }
