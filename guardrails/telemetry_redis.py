"""Telemetry pooled in Redis by every proxy replica, read by the monitor and the CLI.

Bounded whatever the traffic does, like `MemoryTelemetry`:
- counters: one hash per (bucket size, bucket start, funnel, arm), a field per country and
  counter; their number grows with time, not with requests, and each expires after the
  retention;
- payment attempts: a small hash per (funnel, arm, attempt), whose key is a digest of the
  attempt (its path and Idempotency-Key), holding where it began and what it counted; a
  script merges each new outcome into it and adjusts the counters of the bucket where the
  attempt began (`guardrails.telemetry.merge_attempt`), atomically, so a retry that lands
  on another replica is still the same attempt. Each is kept an hour (`ATTEMPT_TTL`), and
  at most `attempt_budget` new ones an hour are kept: past it, an attempt counts as an
  outcome without a key would (so at most two budgets of keys exist, whatever the traffic);
- units: sorted sets per (kind, funnel, arm), member the unit, score when first seen. All
  of them together hold at most `max_units` entries. Above it, every replica keeps a uniform
  sample of units by hash: units whose hash (`guardrails.telemetry.unit_hash`) is in the
  sample of 1 in 2**level, the level shared in `strangler:tm:sample`. A script reads the level
  and adds only sampled units, atomically; the replica that finds the bound exceeded raises
  the level (compare-and-set) and removes the units that left the sample from every unit
  key (listed in `strangler:tm:unit-keys`). The same units are kept in both arms and every
  kind, so conversion and sample ratio are judged on a random sample of the units: still
  unbiased between arms, with less power. Counts are of the sample, never scaled up. The
  level only rises; it goes back to 0 when the telemetry expires (the retention without any
  traffic). Every key expires after the retention; sets of units are also trimmed of units
  first seen before it.
"""

from __future__ import annotations

import hashlib
import logging
import time

import redis

from control.store.base import StoreUnavailable
from guardrails.model import ArmStats, CoreReach, FunnelWindow
from guardrails.telemetry import (
    ARMS,
    COARSE_SECONDS,
    UNIT_KINDS,
    Batch,
    arm_stats,
    bucket_starts,
    granularity,
    in_sample,
    unit_hash,
)

log = logging.getLogger("strangler.guardrails")

PREFIX = "strangler:tm"
K_SAMPLE = f"{PREFIX}:sample"
K_UNIT_KEYS = f"{PREFIX}:unit-keys"
ATTEMPT_TTL = 3600  # a retry or replay of a payment an hour later counts as a new attempt
ATTEMPT_BUDGET = 25_000  # new payment attempts remembered per ATTEMPT_TTL, over all replicas

# KEYS: the sample level, the set of unit keys, a unit key. ARGV: the TTL, then
# (hash, first seen, unit) triples. Adds the units in the sample; returns the level.
_ADD_SAMPLED = """
local level = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = 2 ^ (32 - level)
local pairs_ = {}
for i = 2, #ARGV, 3 do
  if tonumber(ARGV[i]) < limit then
    pairs_[#pairs_ + 1] = ARGV[i + 1]
    pairs_[#pairs_ + 1] = ARGV[i + 2]
  end
  if #pairs_ >= 1000 or (i + 3 > #ARGV and #pairs_ > 0) then
    redis.call('ZADD', KEYS[3], 'NX', unpack(pairs_))
    pairs_ = {}
  end
end
if redis.call('EXPIRE', KEYS[3], ARGV[1]) == 1 then
  redis.call('SADD', KEYS[2], KEYS[3])
  redis.call('EXPIRE', KEYS[2], ARGV[1])
end
if level > 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return level
"""

# KEYS: the sample level. ARGV: the level the caller saw, the TTL. Raises the level by one
# unless another replica already did; returns the level now in force.
_RAISE_LEVEL = """
local level = tonumber(redis.call('GET', KEYS[1]) or '0')
if level == tonumber(ARGV[1]) then
  level = level + 1
  redis.call('SET', KEYS[1], level, 'EX', ARGV[2])
end
return level
"""


# KEYS: the attempt's hash, the budget counter of this period. ARGV: the counters' TTL, fine
# size, coarse size, counter key prefix (up to the size), funnel, arm, the attempt's TTL, the
# budget (new attempts a period), then the outcome: bucket start, country, attempted (0/1),
# result ("ok", "dec" or ""). Merges as `merge_attempt` does and adds the difference to the
# counters of the buckets where the attempt began (keys built here: one Redis, not a
# cluster). Past the period's budget a new attempt is counted but not remembered (as an
# outcome without a key), so no traffic can grow the attempts past 2 budgets of keys.
_MERGE_ATTEMPT = """
local ttl, fine, coarse = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local prefix, funnel, arm = ARGV[4], ARGV[5], ARGV[6]
local attempt_ttl, budget = tonumber(ARGV[7]), tonumber(ARGV[8])
local start, country, att, result = tonumber(ARGV[9]), ARGV[10], ARGV[11], ARGV[12]
local cur = redis.call('HMGET', KEYS[1], 'b', 'c', 'att', 'res')
local delta = {}
if not cur[1] then
  local spent = redis.call('INCR', KEYS[2])
  if spent == 1 then redis.call('EXPIRE', KEYS[2], attempt_ttl * 2) end
  if spent <= budget then
    redis.call('HSET', KEYS[1], 'b', start, 'c', country, 'att', att, 'res', result)
    redis.call('EXPIRE', KEYS[1], attempt_ttl)
  end
  if att == '1' then delta['pay_att'] = 1 end
  if result ~= '' then delta['pay_' .. result] = 1 end
else
  start, country = tonumber(cur[1]), cur[2]
  if cur[3] ~= '1' and att == '1' then
    delta['pay_att'] = 1
    redis.call('HSET', KEYS[1], 'att', '1')
  end
  if cur[4] == '' and result ~= '' then
    delta['pay_' .. result] = 1
    redis.call('HSET', KEYS[1], 'res', result)
  end
end
for _, size in ipairs({fine, coarse}) do
  local key = prefix .. size .. ':' .. (start - start % size) .. ':' .. funnel .. ':' .. arm
  for name, n in pairs(delta) do
    redis.call('HINCRBY', key, country .. '|' .. name, n)
  end
  if next(delta) ~= nil then redis.call('EXPIRE', key, ttl + coarse) end
end
return 0
"""


class RedisTelemetry:
    def __init__(self, url: str, bucket_seconds: int, retention: int = 7 * 3600,
                 max_units: int = 50_000, attempt_budget: int = ATTEMPT_BUDGET) -> None:
        self.bucket_seconds = bucket_seconds
        self.attempt_budget = attempt_budget
        self.retention = retention
        self.max_units = max_units
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2,
                                           decode_responses=True)
        self._add_sampled = self.client.register_script(_ADD_SAMPLED)
        self._raise_level = self.client.register_script(_RAISE_LEVEL)
        self._merge_attempt = self.client.register_script(_MERGE_ATTEMPT)
        self._last_trim = 0.0
        self.sample_shift = 0
        """The shared sample level last seen: units are kept when `in_sample(hash, level)`."""

    def _counter_key(self, size: int, start: int, funnel: str, arm: str) -> str:
        return f"{PREFIX}:c:{size}:{start}:{funnel}:{arm}"

    def _unit_key(self, kind: str, funnel: str, arm: str) -> str:
        return f"{PREFIX}:u:{kind}:{funnel}:{arm}"

    def _attempt_key(self, funnel: str, arm: str, attempt: str) -> str:
        digest = hashlib.sha256(attempt.encode()).hexdigest()[:24]
        return f"{PREFIX}:a:{funnel}:{arm}:{digest}"

    def add(self, batch: Batch) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            for (start, funnel, arm, country), counts in batch.counters.items():
                for size in (self.bucket_seconds, COARSE_SECONDS):
                    key = self._counter_key(size, start // size * size, funnel, arm)
                    for name, value in counts.items():
                        pipe.hincrby(key, f"{country}|{name}", value)
                    pipe.expire(key, self.retention + COARSE_SECONDS)
            period = int(time.time() // ATTEMPT_TTL)
            for (funnel, arm, attempt), event in batch.attempts.items():
                self._merge_attempt(
                    keys=[self._attempt_key(funnel, arm, attempt),
                          f"{PREFIX}:a-budget:{period}"],
                    args=[self.retention, self.bucket_seconds, COARSE_SECONDS,
                          f"{PREFIX}:c:", funnel, arm, ATTEMPT_TTL, self.attempt_budget,
                          event.start, event.country, int(event.attempted), event.result],
                    client=pipe)
            for (kind, funnel, arm), units in batch.units.items():
                self._add_units(pipe, self._unit_key(kind, funnel, arm), units)
                if kind.startswith("rule:"):
                    countries = f"{PREFIX}:rule-countries:{funnel}"
                    pipe.sadd(countries, kind[5:])
                    pipe.expire(countries, self.retention)
            now = time.time()
            if now - self._last_trim > 60:
                self._last_trim = now
                for kind, funnel, arm in batch.units:
                    pipe.zremrangebyscore(self._unit_key(kind, funnel, arm), 0,
                                          now - self.retention)
            pipe.execute()
            if batch.units:
                self._keep_bound()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"telemetry: {exc}") from exc

    def _add_units(self, pipe: redis.client.Pipeline, key: str, units: dict[str, float],
                   ) -> None:
        """Queue the script that adds the units in the sample (the level can only have
        risen since `sample_shift` was read: units out of that sample are left out here)."""
        args: list[str | float | int] = [self.retention]
        for unit, first_seen in units.items():
            hashed = unit_hash(unit)
            if in_sample(hashed, self.sample_shift):
                args += [hashed, first_seen, unit]
        if len(args) > 1:
            self._add_sampled(keys=[K_SAMPLE, K_UNIT_KEYS, key], args=args, client=pipe)

    def unit_count(self) -> int:
        """Unit entries held, over every kind, funnel and arm."""
        return sum(self._unit_counts()[1].values())

    def _unit_counts(self) -> tuple[int, dict[str, int]]:
        """The sample level, and the entries of each unit key."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(K_SAMPLE)
        pipe.smembers(K_UNIT_KEYS)
        level, members = pipe.execute()
        keys = sorted(str(k) for k in members)
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.zcard(key)
        return int(level or 0), dict(zip(keys, map(int, pipe.execute()), strict=True))

    def _keep_bound(self) -> None:
        """Above `max_units`, halve the sample until the units fit (every replica agrees on
        the level through Redis)."""
        level, counts = self._unit_counts()
        while sum(counts.values()) > self.max_units and level < 32:
            level = int(self._raise_level(keys=[K_SAMPLE], args=[level, self.retention]))
            log.warning("telemetry in Redis holds more than %d units: now keeping a sample "
                        "of 1 in %d units for conversion and sample ratio", self.max_units,
                        1 << level)
            counts = {key: self._thin(key, level) for key in counts}
        self.sample_shift = level

    def _thin(self, key: str, level: int) -> int:
        """Remove from one unit key the units outside the sample at `level`; what is left."""
        out = [u for u in self.client.zscan_iter(key, count=1000)
               if not in_sample(unit_hash(u[0]), level)]
        for i in range(0, len(out), 1000):
            self.client.zrem(key, *(u for u, _ in out[i:i + 1000]))
        return int(self.client.zcard(key))

    def _read(
        self, funnel: str, since: float, until: float,
    ) -> dict[str, dict[str, dict[str, int]]]:
        """arm -> country -> counters."""
        size = granularity(self.bucket_seconds, since, until)
        starts = bucket_starts(since, until, size)
        pipe = self.client.pipeline(transaction=False)
        for arm in ARMS:
            for start in starts:
                pipe.hgetall(self._counter_key(size, start, funnel, arm))
        try:
            rows = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"telemetry: {exc}") from exc
        out: dict[str, dict[str, dict[str, int]]] = {arm: {} for arm in ARMS}
        for i, row in enumerate(rows):
            arm = ARMS[i // len(starts)]
            for field, value in row.items():
                country, name = field.split("|", 1)
                counts = out[arm].setdefault(country, {})
                counts[name] = counts.get(name, 0) + int(value)
        return out

    def _zcounts(self, keys: list[str], since: float, until: float) -> list[int]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.zcount(key, since, until)
        try:
            return [int(n) for n in pipe.execute()]
        except redis.RedisError as exc:
            raise StoreUnavailable(f"telemetry: {exc}") from exc

    def _units(self, funnel: str, since: float, until: float) -> dict[str, dict[str, int]]:
        pairs = [(arm, kind) for arm in ARMS for kind in UNIT_KINDS]
        counts = self._zcounts(
            [self._unit_key(kind, funnel, arm) for arm, kind in pairs], since, until
        )
        out: dict[str, dict[str, int]] = {arm: {} for arm in ARMS}
        for (arm, kind), n in zip(pairs, counts, strict=True):
            out[arm][kind] = n
        for arm, per_country in self.rule_units(funnel, since, until).items():
            out[arm]["rule"] = sum(per_country.values())
        return out

    def rule_units(self, funnel: str, since: float, until: float) -> dict[str, dict[str, int]]:
        """arm -> country -> distinct units routed there by a rule."""
        try:
            countries = sorted(
                str(c) for c in self.client.smembers(f"{PREFIX}:rule-countries:{funnel}")
            )
        except redis.RedisError as exc:
            raise StoreUnavailable(f"telemetry: {exc}") from exc
        pairs = [(arm, c) for arm in ARMS for c in countries]
        counts = self._zcounts(
            [self._unit_key(f"rule:{c}", funnel, arm) for arm, c in pairs], since, until
        )
        out: dict[str, dict[str, int]] = {}
        for (arm, country), n in zip(pairs, counts, strict=True):
            if n:
                out.setdefault(arm, {})[country] = n
        return out

    def window(self, funnel: str, since: float, until: float) -> FunnelWindow:
        counters = self._read(funnel, since, until)
        units = self._units(funnel, since, until)
        arms = {}
        for arm in ARMS:
            total: dict[str, int] = {}
            for counts in counters[arm].values():
                for name, value in counts.items():
                    total[name] = total.get(name, 0) + value
            arms[arm] = arm_stats(total, units[arm])
        return FunnelWindow(funnel, arms["core"], arms["legacy"], until - since)

    def countries(self, funnel: str, since: float, until: float) -> dict[str, dict[str, ArmStats]]:
        out: dict[str, dict[str, ArmStats]] = {}
        for arm, per_country in self._read(funnel, since, until).items():
            for country, counts in per_country.items():
                out.setdefault(country, {})[arm] = arm_stats(counts, {})
        return out

    def reach(self, funnel: str, since: float, until: float) -> CoreReach:
        size = self.bucket_seconds
        starts = bucket_starts(since, until, size)
        pipe = self.client.pipeline(transaction=False)
        for start in starts:
            pipe.hgetall(self._counter_key(size, start, funnel, "core"))
        try:
            rows = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"telemetry: {exc}") from exc
        buckets = []
        for start, row in zip(starts, rows, strict=True):
            reached = unreach = 0
            for name, value in row.items():
                counter = name.split("|", 1)[1]
                if counter == "reached":
                    reached += int(value)
                elif counter == "unreach":
                    unreach += int(value)
            buckets.append((start, reached, unreach))
        return CoreReach(size, tuple(buckets))

    def close(self) -> None:
        self.client.close()
