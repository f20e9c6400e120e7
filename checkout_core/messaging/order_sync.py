"""The order sync consumer: pushes placed orders to the downstream order system.

Per message: skip what it does not handle and what it already processed (idempotency keys
recorded atomically with the acknowledgement); push with bounded exponential backoff and
jitter; park in the dead-letter store after `max_attempts` failures, at once when the
downstream rejects the message, or when the stream delivered it `max_deliveries` times
(the consumer keeps dying on it). Messages left pending by a crashed consumer are claimed
after `claim_idle_seconds`. The push carries the event's idempotency key, so a crash between
the push and the acknowledgement leads to a redelivery the downstream recognises.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from checkout_core.domain.events import ORDER_PLACED
from checkout_core.messaging.downstream import Downstream, DownstreamRejected, DownstreamRetryable
from checkout_core.messaging.stream import EventStream, StreamMessage
from checkout_core.retry import Backoff

log = logging.getLogger(__name__)

ConsumerObserver = Callable[[str, str], None]
"""Called with (group, outcome): delivered, duplicate, skipped, retried, parked."""


def _ignore(group: str, outcome: str) -> None:
    return None


DEFAULT_BACKOFF = Backoff(max_attempts=5, base_seconds=0.1, max_seconds=2.0)


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    group: str
    consumer: str
    batch_size: int = 32
    block_seconds: float = 0.2
    backoff: Backoff = DEFAULT_BACKOFF
    max_deliveries: int = 5
    claim_idle_seconds: float = 30.0


class OrderSyncConsumer:
    def __init__(
        self,
        stream: EventStream,
        downstream: Downstream,
        config: ConsumerConfig,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        observe: ConsumerObserver = _ignore,
    ) -> None:
        self.stream = stream
        self.downstream = downstream
        self.config = config
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.observe = observe
        self.heartbeat: float | None = None

    async def run(self) -> None:
        """Consume until cancelled; failures of the stream are logged and retried."""
        await self.stream.ensure_group(self.config.group)
        while True:
            self.heartbeat = time.monotonic()
            try:
                await self.run_once()
            except Exception:
                log.exception("order sync consumer failed; retrying")
                await self.sleep(self.config.block_seconds)

    async def run_once(self, block_seconds: float | None = None) -> int:
        """Handle orphaned messages, then one batch of new ones; the number handled."""
        cfg = self.config
        messages = await self.stream.claim_stale(
            cfg.group, cfg.consumer, cfg.claim_idle_seconds, cfg.batch_size
        )
        if not messages:
            block = cfg.block_seconds if block_seconds is None else block_seconds
            messages = await self.stream.read(cfg.group, cfg.consumer, cfg.batch_size, block)
        for message in messages:
            await self.handle(message)
        return len(messages)

    async def handle(self, message: StreamMessage) -> None:
        group, event = self.config.group, message.event
        if event is None:
            await self._park(message, "undecodable message body", 0)
        elif event.type != ORDER_PLACED:
            await self._ack(message, "skipped")
        elif await self.stream.is_processed(group, event.idempotency_key):
            await self._ack(message, "duplicate")
        elif message.deliveries > self.config.max_deliveries:
            reason = f"delivered {message.deliveries} times without being processed"
            await self._park(message, reason, 0)
        else:
            failure, attempts = await self._push(message)
            if failure is None:
                await self._ack(message, "delivered", event.idempotency_key)
            else:
                await self._park(message, failure, attempts)

    async def _ack(self, message: StreamMessage, outcome: str, key: str | None = None) -> None:
        await self.stream.ack(self.config.group, message, key)
        self.observe(self.config.group, outcome)

    async def _push(self, message: StreamMessage) -> tuple[str | None, int]:
        """(None, attempts) once the downstream took it, else (the last error, attempts)."""
        assert message.event is not None
        event, backoff = message.event, self.config.backoff
        error = "no attempt made"
        for attempt in range(backoff.max_attempts):
            delay = backoff.delay(attempt, self.rng)
            if delay > 0:
                await self.sleep(delay)
            try:
                await self.downstream.push_order(event.idempotency_key, event.data)
                return None, attempt + 1
            except DownstreamRejected as exc:
                return f"rejected by the downstream: {exc}", attempt + 1
            except DownstreamRetryable as exc:
                error = f"downstream failed: {exc}"
                self.observe(self.config.group, "retried")
        return f"gave up after {backoff.max_attempts} attempts; {error}", backoff.max_attempts

    async def _park(self, message: StreamMessage, error: str, attempts: int) -> None:
        log.warning("parking message %s: %s", message.id, error)
        await self.stream.park(self.config.group, message, error, attempts)
        self.observe(self.config.group, "parked")
