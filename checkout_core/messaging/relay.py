"""The outbox relay: publishes committed outbox events to the event stream, in order.

It publishes a batch, then marks it published. A crash in between publishes the batch again
(at least once); consumers drop the duplicates by idempotency key. Use cases wake it after
they commit, and it polls as well, so events written by other processes are relayed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from checkout_core.messaging.stream import EventStream
from checkout_core.service.ports import Clock, Store, UnitOfWork

log = logging.getLogger(__name__)


def _nothing(count: int) -> None:
    return None


class OutboxRelay:
    def __init__(
        self,
        store: Store,
        stream: EventStream,
        clock: Clock,
        batch_size: int = 100,
        poll_seconds: float = 0.2,
        on_published: Callable[[int], None] = _nothing,
    ) -> None:
        self.store = store
        self.stream = stream
        self.clock = clock
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.on_published = on_published
        self.heartbeat: float | None = None
        self._wake: asyncio.Event | None = None

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def run_once(self) -> int:
        """Relay one batch; the number of events published."""
        entries = await self.store.run(
            lambda uow: uow.outbox.unpublished(self.batch_size), write=False
        )
        if not entries:
            return 0
        await self.stream.publish([entry.event for entry in entries])
        seqs = [entry.seq for entry in entries]

        def mark(uow: UnitOfWork) -> None:
            uow.outbox.mark_published(seqs, self.clock())

        await self.store.run(mark)
        self.on_published(len(entries))
        return len(entries)

    async def drain(self) -> int:
        total = 0
        while (count := await self.run_once()) > 0:
            total += count
        return total

    async def run(self) -> None:
        """Relay until cancelled; failures are logged and retried after a pause."""
        self._wake = asyncio.Event()
        while True:
            self.heartbeat = time.monotonic()
            self._wake.clear()
            try:
                count = await self.run_once()
            except Exception:
                log.exception("outbox relay failed; retrying")
                count = 0
            if count < self.batch_size:
                await self._idle()

    async def _idle(self) -> None:
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
