"""Sticky assignments shared by replicas through Redis, behind the local LRU."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from control.decision import Backend
from proxy.sticky import LocalSticky

log = logging.getLogger("strangler.sticky")
KEY = "strangler:sticky:"


class RedisSticky:
    """Local LRU first; on a miss one bounded Redis GET. Writes go out in the background.

    When Redis is slow or down, a miss is treated as "no assignment": the unit's request is
    routed by the rules, which is what a unit with no checkout in flight gets anyway. After
    a failure the store stops asking Redis for `cooldown` seconds (reads and writes: the
    local LRU serves alone), then lets one request probe it: without this, every new unit
    would wait `timeout` and every write would hold a task for as long while Redis is down.
    """

    def __init__(self, url: str, max_units: int, timeout: float = 0.05,
                 cooldown: float = 1.0) -> None:
        self.local = LocalSticky(max_units)
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self.timeout = timeout
        self.cooldown = cooldown
        self._open_until = 0.0  # no Redis calls before this (monotonic) time
        self._failing = False
        self._pending: set[asyncio.Task[None]] = set()

    def _redis_allowed(self) -> bool:
        if not self._failing:
            return True
        now = time.monotonic()
        if now < self._open_until:
            return False
        self._open_until = now + self.cooldown  # this caller probes; the others wait
        return True

    def _failed(self, exc: BaseException) -> None:
        if not self._failing:
            log.warning("Redis sticky store failed (%r): local assignments only, retrying "
                        "every %.1f s", exc, self.cooldown)
        self._failing = True
        self._open_until = time.monotonic() + self.cooldown

    def _succeeded(self) -> None:
        if self._failing:
            log.warning("Redis sticky store answers again")
            self._failing = False

    async def get(self, key: str) -> Backend | None:
        backend = self.local.get_local(key)
        if backend is not None or not self._redis_allowed():
            return backend
        try:
            raw = await asyncio.wait_for(self.client.get(KEY + key), self.timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return None
        self._succeeded()
        if raw is None:
            return None
        return Backend(raw.decode() if isinstance(raw, bytes) else raw)

    def _background(self, write: Callable[[], Awaitable[object]]) -> None:
        if not self._redis_allowed():
            return  # Redis is failing: the local LRU holds the assignment alone
        task: asyncio.Task[None] = asyncio.ensure_future(self._guard(write()))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _guard(self, write: Awaitable[object]) -> None:
        try:
            await write  # bounded by the client's socket timeouts
        except (RedisError, OSError, TimeoutError) as exc:
            log.debug("sticky write to Redis failed: %s", exc)
            self._failed(exc)
        else:
            self._succeeded()

    async def set(self, key: str, backend: Backend, ttl: int) -> None:
        self.local.set_local(key, backend, ttl)
        self._background(lambda: self.client.set(KEY + key, backend.value, ex=ttl))

    async def release(self, key: str) -> None:
        self.local.release_local(key)
        self._background(lambda: self.client.delete(KEY + key))

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=1.0)
        await self.client.aclose()
