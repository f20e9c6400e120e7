"""Sticky assignments shared by replicas through Redis, behind the local LRU.

Redis holds at most `redis_max_units` assignments, whatever the traffic does: time is cut
into periods as long as the idle TTL, and a period allows `redis_max_units / 2` writes (a
shared counter, `strangler:sticky-budget:{ttl}:{period}`, checked and spent by one script
with the write). A key written with that TTL is alive only until the end of the next period,
so the keys alive at any time were written in this period or the previous one. Rewriting an
assignment with the same backend and more than half its TTL left is skipped and costs
nothing. Once a period's budget is spent, new assignments stay in the replica's LRU only: the
unit is still sticky on that replica, and elsewhere it follows the rules, which give it the
same backend unless a percentage changed meanwhile.
"""

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
BUDGET = "strangler:sticky-budget:"

# KEYS[1] the assignment, KEYS[2] this period's budget; ARGV: backend, TTL, writes allowed
# in a period. 1: written (or fresh enough already), 0: the budget is spent.
_SET_WITHIN_BUDGET = """
local ttl = tonumber(ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('TTL', KEYS[1]) > ttl / 2 then
  return 1
end
local spent = redis.call('INCR', KEYS[2])
if spent == 1 then redis.call('EXPIRE', KEYS[2], 2 * ttl) end
if spent > tonumber(ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
return 1
"""


class RedisSticky:
    """Local LRU first; on a miss one bounded Redis GET. Writes go out in the background.

    When Redis is slow or down, a miss is treated as "no assignment": the unit's request is
    routed by the rules, which is what a unit with no checkout in flight gets anyway. After
    a failure the store stops asking Redis for `cooldown` seconds (reads and writes: the
    local LRU serves alone), then lets one request probe it: without this, every new unit
    would wait `timeout` and every write would hold a task for as long while Redis is down.
    """

    def __init__(self, url: str, max_units: int, timeout: float = 0.05,
                 cooldown: float = 1.0, redis_max_units: int = 100_000) -> None:
        self.local = LocalSticky(max_units)
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._set_within_budget = self.client.register_script(_SET_WITHIN_BUDGET)
        self.writes_per_period = max(1, redis_max_units // 2)
        self._spent: tuple[int, int] | None = None  # the (ttl, period) last found spent
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
        period = int(time.time() // ttl)
        self._background(lambda: self._write(key, backend, ttl, period))

    async def _write(self, key: str, backend: Backend, ttl: int, period: int) -> None:
        written = await self._set_within_budget(
            keys=[KEY + key, f"{BUDGET}{ttl}:{period}"],
            args=[backend.value, ttl, self.writes_per_period])
        if not written and self._spent != (ttl, period):
            self._spent = (ttl, period)
            log.warning("sticky budget spent: %d assignments written to Redis in this "
                        "%d s period; until the next, new ones stay on their replica",
                        self.writes_per_period, ttl)

    async def release(self, key: str) -> None:
        self.local.release_local(key)
        self._background(lambda: self.client.delete(KEY + key))

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=1.0)
        await self.client.aclose()
