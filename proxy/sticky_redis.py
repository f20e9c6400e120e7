"""Sticky assignments shared by replicas through Redis, behind the local LRU."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from proxy.decision import Backend
from proxy.sticky import LocalSticky

log = logging.getLogger("strangler.sticky")
KEY = "strangler:sticky:"


class RedisSticky:
    """Local LRU first; on a miss one bounded Redis GET. Writes go out in the background.

    When Redis is slow or down, a miss is treated as "no assignment": the unit's request is
    routed by the rules, which is what a unit with no checkout in flight gets anyway.
    """

    def __init__(self, url: str, max_units: int, timeout: float = 0.05) -> None:
        self.local = LocalSticky(max_units)
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self.timeout = timeout
        self._pending: set[asyncio.Task[None]] = set()

    async def get(self, key: str) -> Backend | None:
        backend = self.local.get_local(key)
        if backend is not None:
            return backend
        try:
            raw = await asyncio.wait_for(self.client.get(KEY + key), self.timeout)
        except (RedisError, OSError, TimeoutError):
            return None
        if raw is None:
            return None
        return Backend(raw.decode() if isinstance(raw, bytes) else raw)

    def _background(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(self._guard(coro))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    @staticmethod
    async def _guard(coro: object) -> None:
        try:
            await coro  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            log.debug("sticky write to Redis failed: %s", exc)

    async def set(self, key: str, backend: Backend, ttl: int) -> None:
        self.local.set_local(key, backend, ttl)
        self._background(self.client.set(KEY + key, backend.value, ex=ttl))

    async def release(self, key: str) -> None:
        self.local.release_local(key)
        self._background(self.client.delete(KEY + key))

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=1.0)
        await self.client.aclose()
