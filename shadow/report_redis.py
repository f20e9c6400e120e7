"""The shadow report pooled in Redis by every proxy replica, read by the CLI and the gate.

Keys (every one expires after the retention):
- `strangler:shadow:funnels`: the funnels with results;
- `strangler:shadow:c:{funnel}:{bucket start}`: a hash of counters for one time bucket:
  `c\\t{route}\\t{field}` comparisons, `m\\t{route}\\t{field}` mismatches (field '' is the
  whole response), `d\\t{reason}` dropped; their number grows with time, not traffic, and
  the fields per route are bounded by each replica's recorder;
- `strangler:shadow:x:{funnel}:{route}`: the newest examples (JSON, redacted), a capped list;
- `strangler:shadow:u:{funnel}` and `strangler:shadow:ub:{funnel}`: sorted sets of unit
  digests scored by when each was last compared / last had a mismatch, trimmed to the
  retention and to `max_units` (~60 bytes an entry).

Sync, like `guardrails.telemetry_redis`: the mirror calls `add` in a thread. Redis errors
(`redis.RedisError`, OSError) propagate.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis

from shadow.report import (
    DEFAULT_BUCKET_SECONDS,
    DEFAULT_RETENTION,
    RESPONSE,
    Counter,
    ReportData,
    ShadowBatch,
    bucket_start,
    summarize,
)
from shadow.routes import ROUTES

PREFIX = "strangler:shadow"
K_FUNNELS = f"{PREFIX}:funnels"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisShadowReport:
    """`shadow.report.ShadowStore` in Redis."""

    def __init__(self, url: str, *, bucket_seconds: int = DEFAULT_BUCKET_SECONDS,
                 retention: float = DEFAULT_RETENTION, examples_per_route: int = 50,
                 max_units: int = 50_000, timeout: float = 2.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.bucket_seconds = bucket_seconds
        self.retention = retention
        self.ttl = int(retention) + bucket_seconds
        self.examples_per_route = examples_per_route
        self.max_units = max_units
        self._clock = clock
        self.client = redis.Redis.from_url(url, socket_timeout=timeout,
                                           socket_connect_timeout=timeout)

    def _counters_key(self, funnel: str, start: int) -> str:
        return f"{PREFIX}:c:{funnel}:{start}"

    def add(self, batch: ShadowBatch) -> None:
        if not batch:
            return
        start = bucket_start(batch.at, self.bucket_seconds)
        horizon = self._clock() - self.retention
        pipe = self.client.pipeline(transaction=False)
        funnels = ({f for f, _, _ in batch.counters} | set(batch.units)
                   | {f for f, _ in batch.dropped})
        for (funnel, route, path), (compared, mismatched) in batch.counters.items():
            key = self._counters_key(funnel, start)
            pipe.hincrby(key, f"c\t{route}\t{path}", compared)
            if mismatched:
                pipe.hincrby(key, f"m\t{route}\t{path}", mismatched)
        for (funnel, reason), n in batch.dropped.items():
            pipe.hincrby(self._counters_key(funnel, start), f"d\t{reason}", n)
        for funnel in funnels:
            pipe.expire(self._counters_key(funnel, start), self.ttl)
        for (funnel, route), shown in batch.examples.items():
            key = f"{PREFIX}:x:{funnel}:{route}"
            pipe.lpush(key, *[json.dumps(e, default=str) for e in shown])
            pipe.ltrim(key, 0, self.examples_per_route - 1)
            pipe.expire(key, self.ttl)
        for funnel, units in batch.units.items():
            seen, bad = f"{PREFIX}:u:{funnel}", f"{PREFIX}:ub:{funnel}"
            pipe.zadd(seen, dict.fromkeys(units, batch.at))
            mismatched_units = [d for d, b in units.items() if b]
            if mismatched_units:
                pipe.zadd(bad, dict.fromkeys(mismatched_units, batch.at))
            for key in (seen, bad):
                pipe.zremrangebyscore(key, "-inf", f"({horizon}")
                pipe.zremrangebyrank(key, 0, -(self.max_units + 1))
                pipe.expire(key, self.ttl)
        if funnels:
            pipe.sadd(K_FUNNELS, *funnels)
            pipe.expire(K_FUNNELS, self.ttl)
        pipe.execute()

    def _funnels(self, funnel: str | None) -> list[str]:
        if funnel is not None:
            return [funnel]
        return sorted(_text(f) for f in self.client.smembers(K_FUNNELS))

    def data(self, window: float | None = None, funnel: str | None = None) -> ReportData:
        window = self.retention if window is None else min(window, self.retention)
        now = self._clock()
        since = now - window
        starts = range(bucket_start(since, self.bucket_seconds), int(now) + 1,
                       self.bucket_seconds)
        funnels = self._funnels(funnel)
        pipe = self.client.pipeline(transaction=False)
        for f in funnels:
            for start in starts:
                pipe.hgetall(self._counters_key(f, start))
            pipe.zcount(f"{PREFIX}:u:{f}", since, "+inf")
            pipe.zcount(f"{PREFIX}:ub:{f}", since, "+inf")
        replies = iter(pipe.execute())
        out = ReportData(window_seconds=window)
        counters: dict[Counter, list[int]] = {}
        for f in funnels:
            for _ in starts:
                for raw_name, raw_value in next(replies).items():
                    kind, _, rest = _text(raw_name).partition("\t")
                    n = int(raw_value)
                    if kind == "d":
                        out.dropped[(f, rest)] = out.dropped.get((f, rest), 0) + n
                        continue
                    route, _, path = rest.partition("\t")
                    counts = counters.setdefault((f, route, path), [0, 0])
                    counts[0 if kind == "c" else 1] += n
            compared, bad = int(next(replies)), int(next(replies))
            if compared:
                out.units[f] = (compared, bad)
        out.counters = {k: (v[0], v[1]) for k, v in counters.items()}
        routes = sorted({(f, r) for f, r, p in out.counters if p == RESPONSE})
        if routes:
            pipe = self.client.pipeline(transaction=False)
            for f, r in routes:
                pipe.lrange(f"{PREFIX}:x:{f}:{r}", 0, -1)
            for (f, r), raw in zip(routes, pipe.execute(), strict=True):
                shown = [json.loads(e) for e in raw]
                out.examples[(f, r)] = [e for e in shown if e.get("at", 0) >= since]
        return out

    def summary(self, window: float | None = None, **kwargs: Any) -> dict[str, Any]:
        return summarize(self.data(window, kwargs.get("funnel")), **kwargs)

    def reset(self, funnel: str | None = None) -> None:
        now = self._clock()
        starts = range(bucket_start(now - self.retention, self.bucket_seconds), int(now) + 1,
                       self.bucket_seconds)
        for f in self._funnels(funnel):
            keys = [self._counters_key(f, s) for s in starts]
            keys += [f"{PREFIX}:x:{f}:{r.key}" for r in ROUTES]
            keys += [f"{PREFIX}:u:{f}", f"{PREFIX}:ub:{f}"]
            self.client.delete(*keys)
            self.client.srem(K_FUNNELS, f)

    def close(self) -> None:
        self.client.close()
