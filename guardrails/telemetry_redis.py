"""Telemetry pooled in Redis by every proxy replica, read by the monitor and the CLI."""

from __future__ import annotations

import time

import redis

from control.store.base import StoreUnavailable
from guardrails.model import ArmStats, FunnelWindow
from guardrails.telemetry import (
    ARMS,
    COARSE_SECONDS,
    UNIT_KINDS,
    Batch,
    arm_stats,
    bucket_starts,
    granularity,
)

PREFIX = "strangler:tm"


class RedisTelemetry:
    def __init__(self, url: str, bucket_seconds: int, retention: int = 7 * 3600) -> None:
        self.bucket_seconds = bucket_seconds
        self.retention = retention
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2,
                                           decode_responses=True)
        self._last_trim = 0.0

    def _counter_key(self, size: int, start: int, funnel: str, arm: str) -> str:
        return f"{PREFIX}:c:{size}:{start}:{funnel}:{arm}"

    def _unit_key(self, kind: str, funnel: str, arm: str) -> str:
        return f"{PREFIX}:u:{kind}:{funnel}:{arm}"

    def add(self, batch: Batch) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            for (start, funnel, arm, country), counts in batch.counters.items():
                for size in (self.bucket_seconds, COARSE_SECONDS):
                    key = self._counter_key(size, start // size * size, funnel, arm)
                    for name, value in counts.items():
                        pipe.hincrby(key, f"{country}|{name}", value)
                    pipe.expire(key, self.retention + COARSE_SECONDS)
            for (kind, funnel, arm), units in batch.units.items():
                pipe.zadd(self._unit_key(kind, funnel, arm), units, nx=True)
                if kind.startswith("rule:"):
                    pipe.sadd(f"{PREFIX}:rule-countries:{funnel}", kind[5:])
            now = time.time()
            if now - self._last_trim > 60:
                self._last_trim = now
                for kind, funnel, arm in batch.units:
                    pipe.zremrangebyscore(self._unit_key(kind, funnel, arm), 0,
                                          now - self.retention)
            pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"telemetry: {exc}") from exc

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

    def close(self) -> None:
        self.client.close()
