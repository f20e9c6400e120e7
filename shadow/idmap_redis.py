"""The id map in Redis, so that every proxy replica replays a unit's requests with the same
core ids: one hash per unit, `strangler:shadow:ids:{unit}`, legacy id -> core id.

Bounded whatever the traffic does, like the sticky assignments (docs/proxy.md): a unit's
hash expires `ttl` seconds after it was created (its first pair), holds at most
`max_ids_per_unit` ids, and new hashes are counted against a budget of `max_units / 2` per
period of `ttl` seconds (`strangler:shadow:ids-budget:{ttl}:{period}`, checked and spent by
the script that writes). A hash lives at most one period, so the hashes alive at any time
were created in this period or the last: never more than `max_units`. Once a period's
budget is spent (a warning is logged once), new units get no map: their later requests
cannot be replayed and are dropped as `unmapped`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import redis.asyncio as aioredis

from shadow.idmap import DEFAULT_MAX_IDS_PER_UNIT, DEFAULT_MAX_UNITS, DEFAULT_TTL

log = logging.getLogger("strangler.shadow")
KEY = "strangler:shadow:ids:"
BUDGET = "strangler:shadow:ids-budget:"

# KEYS[1] the unit's hash, KEYS[2] this period's budget. ARGV: TTL, new hashes allowed in a
# period, ids allowed per unit, then legacy/core pairs. Returns the pairs added, or -1
# when the unit has no hash and the budget is spent.
_ADD = """
local exists = redis.call('EXISTS', KEYS[1])
if exists == 0 then
  local spent = redis.call('INCR', KEYS[2])
  if spent == 1 then redis.call('EXPIRE', KEYS[2], 2 * tonumber(ARGV[1])) end
  if spent > tonumber(ARGV[2]) then return -1 end
end
local n = redis.call('HLEN', KEYS[1])
local added = 0
for i = 4, #ARGV, 2 do
  if n >= tonumber(ARGV[3]) then break end
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    n = n + 1
    added = added + 1
  end
end
if exists == 0 and added > 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return added
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisIdMap:
    """`shadow.idmap.IdMap` in Redis. Errors (RedisError, OSError, timeouts) propagate:
    the mirror counts the job as dropped (`error`)."""

    def __init__(self, url: str, *, ttl: float = DEFAULT_TTL,
                 max_units: int = DEFAULT_MAX_UNITS,
                 max_ids_per_unit: int = DEFAULT_MAX_IDS_PER_UNIT, timeout: float = 0.5,
                 clock: Callable[[], float] = time.time) -> None:
        self.ttl = max(1, int(ttl))
        self.new_units_per_period = max(1, max_units // 2)
        self.max_ids_per_unit = max_ids_per_unit
        self._clock = clock
        self.client = aioredis.Redis.from_url(url, socket_timeout=timeout,
                                              socket_connect_timeout=timeout)
        self._add = self.client.register_script(_ADD)
        self._spent_period: int | None = None
        self.budget_refusals = 0

    async def get(self, unit: str) -> dict[str, str]:
        raw = await self.client.hgetall(KEY + unit)
        return {_text(k): _text(v) for k, v in raw.items()}

    async def add(self, unit: str, pairs: Mapping[str, str]) -> None:
        if not pairs:
            return
        period = int(self._clock() // self.ttl)
        args: list[str | int] = [self.ttl, self.new_units_per_period, self.max_ids_per_unit]
        for legacy, core in pairs.items():
            args += [legacy, core]
        added = await self._add(keys=[KEY + unit, f"{BUDGET}{self.ttl}:{period}"], args=args)
        if added == -1:
            self.budget_refusals += 1
            if self._spent_period != period:
                self._spent_period = period
                log.warning("shadow id map: %d new units this period is the budget; new "
                            "units are not mapped (their requests are dropped as unmapped)",
                            self.new_units_per_period)

    async def close(self) -> None:
        await self.client.aclose()
