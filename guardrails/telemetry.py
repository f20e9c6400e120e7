"""Measuring both arms with the same ruler, and pooling the figures of every replica.

The recorder sits on the hot path as an outcome observer: it only adds to in-memory
counters. A flush task hands the deltas to a telemetry store every second:

- counters per (time bucket, funnel, arm, country): requests, errors, a latency histogram,
  whether the backend was reached (`reached`, `unreach`), payment attempts, successes and
  declines; written to a fine bucket (`bucket_seconds`) and a coarse one (`COARSE_SECONDS`)
  so that long windows read few keys;
- units, for rates over customers: the first time each unit started a checkout, placed an
  order, or was routed by a rule, per funnel and arm;
- payment attempts, once each: an outcome that carries an `attempt` (its path and
  Idempotency-Key) counts one attempt however often it is retried or replayed; its
  result is the first definitive one (an order placed or a decline), counted in the bucket
  where the attempt began (`merge_attempt`);
- failovers: when the core could not be reached and legacy served the request
  (`RequestOutcome.failed_over`), the core's arm counts `unreach` only: no request, no
  error, no latency. A customer was served; the error budget is not burned. The judge
  trips on them only when the core stays unreachable past a grace period (`reach`).

`MemoryTelemetry` serves one process (embedded mode); `RedisTelemetry` pools all replicas.
Both keep at most `max_units` unit entries: above it, a uniform sample by unit hash, the same
units in every arm and kind (`in_sample`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import mmh3

from control.decision import Reason
from guardrails.model import (
    N_LATENCY_BUCKETS,
    ArmStats,
    CoreReach,
    FunnelWindow,
    latency_bucket,
)
from proxy.outcome import RequestOutcome

log = logging.getLogger("strangler.guardrails")

COARSE_SECONDS = 300
ARMS = ("core", "legacy")
UNIT_KINDS = ("started", "converted")  # plus "rule:<country>"

# signal -> counter it adds to
_SIGNAL_COUNTERS = {
    "payment_attempted": "pay_att", "order_placed": "pay_ok", "payment_declined": "pay_dec",
}
_SIGNAL_UNITS = {"checkout_started": "started", "order_placed": "converted"}

Key = tuple[int, str, str, str]  # bucket start, funnel, arm, country
AttemptKey = tuple[str, str, str]  # funnel, arm, attempt
UNREACHABLE = "connect"  # the upstream error kind of a backend that could not be reached
_PAYMENT_COUNTERS = ("pay_att", "pay_ok", "pay_dec")


@dataclass(slots=True)
class Attempt:
    """One payment attempt as counted: the bucket and country where it began, whether it
    was attempted (a `payment_attempted` signal) and its definitive result so far: "ok"
    (an order was placed), "dec" (declined) or "" (none yet: failures are provisional, a
    retry with the same key may still succeed)."""

    start: int
    country: str
    attempted: bool
    result: str

    def counts(self) -> dict[str, int]:
        return {"pay_att": int(self.attempted), "pay_ok": int(self.result == "ok"),
                "pay_dec": int(self.result == "dec")}


def merge_attempt(old: Attempt | None, new: Attempt) -> Attempt:
    """What an attempt counts after one more outcome with its key: attempted once, and the
    first definitive result stays (a replay of a placed order is still one order)."""
    if old is None:
        return new
    return Attempt(old.start, old.country, old.attempted or new.attempted,
                   old.result or new.result)


def attempt_of(signals: tuple[str, ...], start: int, country: str) -> Attempt | None:
    """The attempt an outcome's signals describe, or None when they say nothing of a
    payment."""
    counters = {_SIGNAL_COUNTERS[s] for s in signals if s in _SIGNAL_COUNTERS}
    if not counters:
        return None
    result = "ok" if "pay_ok" in counters else "dec" if "pay_dec" in counters else ""
    return Attempt(start, country, "pay_att" in counters, result)


def unit_hash(unit: str) -> int:
    """The 32-bit hash that samples units (independent of the rules' bucketing hash)."""
    return int(mmh3.hash(unit, 0x5EED, signed=False))


def in_sample(hashed: int, shift: int) -> bool:
    """Whether a unit of hash `hashed` is in the sample of 1 in 2**shift (its top `shift`
    bits are zero). The sample at `shift + 1` is a subset of the one at `shift`."""
    return hashed < 1 << (32 - shift)


@dataclass
class Batch:
    """Deltas since the last flush."""

    counters: dict[Key, dict[str, int]] = field(default_factory=dict)
    units: dict[tuple[str, str, str], dict[str, float]] = field(default_factory=dict)
    attempts: dict[AttemptKey, Attempt] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.counters or self.units or self.attempts)


class TelemetryRecorder:
    """Outcome observer: cheap in-memory aggregation, drained by the flush task."""

    def __init__(self, bucket_seconds: int, clock: Callable[[], float] = time.time) -> None:
        self.bucket_seconds = bucket_seconds
        self.clock = clock
        self._batch = Batch()
        self._lock = threading.Lock()

    def observe(self, o: RequestOutcome) -> None:
        if o.funnel == "-":
            return
        now = self.clock()
        start = int(now // self.bucket_seconds * self.bucket_seconds)
        arm = o.backend.value
        with self._lock:
            key = (start, o.funnel, arm, o.country)
            c = self._batch.counters.get(key)
            if c is None:
                c = self._batch.counters[key] = defaultdict(int)
            if o.failed_over:  # the customer was served by legacy: reachability only
                c["unreach"] += 1
                return
            c["requests"] += 1
            c["unreach" if o.upstream_error == UNREACHABLE else "reached"] += 1
            if o.upstream_error is not None or o.status >= 500:
                c["errors"] += 1
            c[f"lat{latency_bucket(o.duration * 1000)}"] += 1
            attempt = None
            if o.attempt is not None:
                attempt = attempt_of(o.signals, start, o.country)
                if attempt is not None:
                    attempts = self._batch.attempts
                    akey = (o.funnel, arm, o.attempt)
                    attempts[akey] = merge_attempt(attempts.get(akey), attempt)
            for signal in o.signals:
                counter = _SIGNAL_COUNTERS.get(signal)
                if counter is not None and attempt is None:
                    c[counter] += 1
                kind = _SIGNAL_UNITS.get(signal)
                if kind is not None:
                    self._unit(kind, o.funnel, arm, o.unit, now)
            if o.reason is Reason.RULE:
                self._unit(f"rule:{o.country}", o.funnel, arm, o.unit, now)

    def _unit(self, kind: str, funnel: str, arm: str, unit: str, now: float) -> None:
        self._batch.units.setdefault((kind, funnel, arm), {}).setdefault(unit, now)

    def drain(self) -> Batch:
        with self._lock:
            batch, self._batch = self._batch, Batch()
        return batch


class TelemetryStore(Protocol):
    bucket_seconds: int

    def add(self, batch: Batch) -> None: ...

    def window(self, funnel: str, since: float, until: float) -> FunnelWindow: ...

    def countries(self, funnel: str, since: float, until: float) -> dict[str, dict[str, ArmStats]]:
        ...

    def rule_units(self, funnel: str, since: float, until: float) -> dict[str, dict[str, int]]:
        ...

    def reach(self, funnel: str, since: float, until: float) -> CoreReach: ...

    def close(self) -> None: ...


def arm_stats(counters: dict[str, int], units: dict[str, int]) -> ArmStats:
    return ArmStats(
        requests=counters.get("requests", 0),
        errors=counters.get("errors", 0),
        latency_buckets=tuple(counters.get(f"lat{i}", 0) for i in range(N_LATENCY_BUCKETS)),
        checkout_units=units.get("started", 0),
        converted_units=units.get("converted", 0),
        payment_attempts=counters.get("pay_att", 0),
        payment_successes=counters.get("pay_ok", 0),
        payment_declines=counters.get("pay_dec", 0),
        rule_units=units.get("rule", 0),
        unreachable=counters.get("unreach", 0),
    )


def bucket_starts(since: float, until: float, size: int) -> list[int]:
    """Every bucket that overlaps [since, until]: counters are whole buckets, so a window
    also counts what its first bucket holds from before `since` (the monitor starts an
    epoch after an unkill at a bucket's edge for that reason)."""
    return list(range(int(since // size * size), int(until) + 1, size))


def granularity(fine: int, since: float, until: float) -> int:
    """Coarse buckets for long windows (few keys to read), fine ones for short windows."""
    return COARSE_SECONDS if until - since > 6 * COARSE_SECONDS else fine


class MemoryTelemetry:
    """Telemetry of one process, kept in memory for `retention` seconds."""

    def __init__(self, bucket_seconds: int, retention: float = 7 * 3600,
                 max_units: int = 50_000) -> None:
        self.bucket_seconds = bucket_seconds
        self.retention = retention
        self.max_units = max_units
        self._lock = threading.Lock()
        # (size, start, funnel, arm, country) -> counters
        self._buckets: dict[tuple[int, int, str, str, str], dict[str, int]] = {}
        # (kind, funnel, arm) -> unit -> first seen, oldest first
        self._units: dict[tuple[str, str, str], OrderedDict[str, float]] = {}
        # payment attempts counted so far, oldest first, at most `max_units`
        self._attempts: OrderedDict[AttemptKey, Attempt] = OrderedDict()
        self.sample_shift = 0
        """Units are kept when their hash's top `sample_shift` bits are zero: a share of
        2**-sample_shift, raised by one step each time `max_units` is exceeded."""

    def add(self, batch: Batch) -> None:
        with self._lock:
            for (start, funnel, arm, country), counts in batch.counters.items():
                self._add_counts(start, funnel, arm, country, counts)
            for (funnel, arm, attempt), event in batch.attempts.items():
                akey = (funnel, arm, attempt)
                old = self._attempts.pop(akey, None)
                new = self._attempts[akey] = merge_attempt(old, event)
                before = old.counts() if old is not None else {}
                delta = {name: n - before.get(name, 0) for name, n in new.counts().items()}
                self._add_counts(new.start, funnel, arm, new.country,
                            {name: n for name, n in delta.items() if n})
            while len(self._attempts) > self.max_units:
                self._attempts.popitem(last=False)
            for unit_key, units in batch.units.items():
                seen = self._units.get(unit_key)
                if seen is None:
                    seen = self._units[unit_key] = OrderedDict()
                for unit, at in units.items():
                    if unit not in seen and self._sampled(unit):
                        seen[unit] = at
            self._expire(time.time() - self.retention)
            while self.unit_count() > self.max_units and self.sample_shift < 32:
                self._thin()

    def _add_counts(self, start: int, funnel: str, arm: str, country: str,
                    counts: dict[str, int]) -> None:
        for size in (self.bucket_seconds, COARSE_SECONDS):
            bucket = (size, start // size * size, funnel, arm, country)
            target = self._buckets.setdefault(bucket, {})
            for name, value in counts.items():
                target[name] = target.get(name, 0) + value

    def unit_count(self) -> int:
        """Units held, over every kind, funnel and arm (a few dozen keys)."""
        return sum(map(len, self._units.values()))

    def _sampled(self, unit: str) -> bool:
        shift = self.sample_shift
        return not shift or in_sample(unit_hash(unit), shift)

    def _thin(self) -> None:
        """Keep half the sample: memory stays bounded whatever the number of customers. The
        same units are kept in every arm and kind, so the unit-based guardrails (conversion,
        sample ratio) judge a uniform random sample of the units: still valid, with less
        power. Counts are of the sample, never scaled up."""
        self.sample_shift += 1
        log.warning("telemetry holds more than %d units: now keeping a sample of 1 in "
                    "%d units for conversion and sample ratio", self.max_units,
                    1 << self.sample_shift)
        for seen in self._units.values():  # in place: no second copy at the peak
            for unit in [u for u in seen if not self._sampled(u)]:
                del seen[unit]

    def _expire(self, horizon: float) -> None:
        for key in [k for k in self._buckets if k[1] < horizon - COARSE_SECONDS]:
            del self._buckets[key]
        while self._attempts and next(iter(self._attempts.values())).start < horizon:
            self._attempts.popitem(last=False)
        for seen in self._units.values():  # oldest first: stop at the first one to keep
            while seen:
                unit, at = next(iter(seen.items()))
                if at >= horizon:
                    break
                del seen[unit]

    def _counters(
        self, funnel: str, since: float, until: float,
    ) -> dict[tuple[str, str], dict[str, int]]:
        size = granularity(self.bucket_seconds, since, until)
        first = since // size * size
        out: dict[tuple[str, str], dict[str, int]] = {}
        with self._lock:
            for (s, start, f, arm, country), counts in self._buckets.items():
                if s == size and f == funnel and first <= start <= until:
                    target = out.setdefault((arm, country), {})
                    for name, value in counts.items():
                        target[name] = target.get(name, 0) + value
        return out

    def _count(self, kind: str, funnel: str, arm: str, since: float, until: float) -> int:
        with self._lock:
            seen = self._units.get((kind, funnel, arm))
            if not seen:
                return 0
            return sum(1 for at in seen.values() if since <= at <= until)

    def _unit_counts(self, funnel: str, arm: str, since: float, until: float) -> dict[str, int]:
        counts = {kind: self._count(kind, funnel, arm, since, until) for kind in UNIT_KINDS}
        counts["rule"] = sum(self.rule_units(funnel, since, until).get(arm, {}).values())
        return counts

    def rule_units(self, funnel: str, since: float, until: float) -> dict[str, dict[str, int]]:
        """arm -> country -> distinct units routed there by a rule."""
        with self._lock:
            kinds = [(k, a) for (k, f, a) in self._units if f == funnel and k.startswith("rule:")]
        out: dict[str, dict[str, int]] = {}
        for kind, arm in kinds:
            n = self._count(kind, funnel, arm, since, until)
            if n:
                out.setdefault(arm, {})[kind[5:]] = n
        return out

    def window(self, funnel: str, since: float, until: float) -> FunnelWindow:
        per_country = self._counters(funnel, since, until)
        arms = {}
        for arm in ARMS:
            total: dict[str, int] = {}
            for (a, _), counts in per_country.items():
                if a == arm:
                    for name, value in counts.items():
                        total[name] = total.get(name, 0) + value
            arms[arm] = arm_stats(total, self._unit_counts(funnel, arm, since, until))
        return FunnelWindow(funnel, arms["core"], arms["legacy"], until - since)

    def countries(self, funnel: str, since: float, until: float) -> dict[str, dict[str, ArmStats]]:
        out: dict[str, dict[str, ArmStats]] = {}
        for (arm, country), counts in self._counters(funnel, since, until).items():
            out.setdefault(country, {})[arm] = arm_stats(counts, {})
        return out

    def reach(self, funnel: str, since: float, until: float) -> CoreReach:
        size = self.bucket_seconds
        starts = bucket_starts(since, until, size)
        per_start = {start: [0, 0] for start in starts}
        with self._lock:
            for (s, start, f, arm, _), counts in self._buckets.items():
                if s == size and f == funnel and arm == "core" and start in per_start:
                    row = per_start[start]
                    row[0] += counts.get("reached", 0)
                    row[1] += counts.get("unreach", 0)
        return CoreReach(size, tuple((start, r, u) for start, (r, u) in per_start.items()))

    def close(self) -> None:
        pass
