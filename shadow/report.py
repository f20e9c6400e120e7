"""What the shadow found: comparisons per (funnel, route, field), parity per funnel.

Three parts, as in `guardrails.telemetry`:
- `ShadowRecorder` (in the mirror's event loop, no I/O): counts each comparison into a batch;
- a store pooling batches over time: `MemoryShadowReport` here (one process), or
  `shadow.report_redis.RedisShadowReport` (every replica's batches in one Redis);
- `summarize` (pure): a store's `ReportData` over a window as the JSON-ready summary that
  `strangler shadow status` and `strangler shadow diff` print, with the mismatch rate's
  confidence interval, a few redacted examples, and noise flags; `parity_gate` judges a
  funnel's parity against a bar.

Counts per field are kept in time buckets (one hour by default, for a retention of a day),
so a fix in the core shows within the window. Parity is per unit: the share of units
compared in the window whose comparisons all matched. Units are kept as digests, never as
the session ids they are. Everything is bounded: fields per route (`@other` beyond),
examples per route, units per funnel.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from guardrails.stats import bernoulli_cs
from shadow.compare import STATUS, FieldResult, example, is_money

RESPONSE = ""  # the field name of route-level counts: responses compared, with any mismatch
OTHER_FIELD = "@other"  # fields beyond the bound of distinct fields per route
DEFAULT_BUCKET_SECONDS = 3600
DEFAULT_RETENTION = 24 * 3600.0
DEFAULT_ALPHA = 0.05
DEFAULT_NOISE_MIN = 20
MAX_FIELDS_PER_ROUTE = 200
NOISE_HINT = ("differs in every one of {n} comparisons: if it is inherently unstable (a "
              "timestamp, a random token), add it to shadow.ignore")
DROP_REASONS = ("queue_full", "unmapped", "error", "too_large", "legacy_error", "stopped")

Counter = tuple[str, str, str]  # funnel, route, field


def unit_digest(unit: str) -> str:
    """What the report keeps of a unit: a digest, not the session id itself."""
    return hashlib.sha256(b"strangler-shadow-unit\x00" + unit.encode()).hexdigest()[:16]


@dataclass
class ShadowBatch:
    """What a recorder saw since it was last drained."""

    at: float
    counters: dict[Counter, list[int]] = field(default_factory=dict)  # [compared, mismatched]
    examples: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    units: dict[str, dict[str, bool]] = field(default_factory=dict)  # digest -> mismatched
    dropped: dict[tuple[str, str], int] = field(default_factory=dict)  # (funnel, reason)

    def __bool__(self) -> bool:
        return bool(self.counters or self.units or self.dropped)


class ShadowRecorder:
    """Counts comparisons and drops in memory until drained. No I/O, O(fields) a call."""

    def __init__(self, examples_per_route: int = 20,
                 max_fields_per_route: int = MAX_FIELDS_PER_ROUTE,
                 clock: Callable[[], float] = time.time) -> None:
        self.examples_per_route = examples_per_route
        self.max_fields_per_route = max_fields_per_route
        self._clock = clock
        self._fields: dict[tuple[str, str], set[str]] = {}
        self._batch = ShadowBatch(clock())

    def _field(self, funnel: str, route: str, path: str) -> str:
        known = self._fields.setdefault((funnel, route), set())
        if path in known:
            return path
        if len(known) >= self.max_fields_per_route:
            return OTHER_FIELD
        known.add(path)
        return path

    def observe(self, funnel: str, unit: str, route: str, results: Sequence[FieldResult],
                resource: tuple[str, str] | None = None) -> None:
        """One comparison of the responses to one request. `resource`: the (legacy, core)
        ids of the resource the responses describe, shown with the examples."""
        b = self._batch
        now = self._clock()
        bad = False
        for r in results:
            key = (funnel, route, self._field(funnel, route, r.path))
            counts = b.counters.setdefault(key, [0, 0])
            counts[0] += 1
            if not r.equal:
                counts[1] += 1
                bad = True
                shown = example(r) | {"route": route, "at": now}
                if resource is not None:
                    shown |= {"legacy_id": resource[0], "core_id": resource[1]}
                examples = b.examples.setdefault((funnel, route), [])
                examples.append(shown)
                if len(examples) > self.examples_per_route:
                    del examples[0]
        whole = b.counters.setdefault((funnel, route, RESPONSE), [0, 0])
        whole[0] += 1
        whole[1] += bad
        units = b.units.setdefault(funnel, {})
        digest = unit_digest(unit)
        units[digest] = units.get(digest, False) or bad

    def dropped(self, funnel: str, reason: str, n: int = 1) -> None:
        key = (funnel, reason)
        self._batch.dropped[key] = self._batch.dropped.get(key, 0) + n

    def drain(self) -> ShadowBatch:
        batch, self._batch = self._batch, ShadowBatch(self._clock())
        batch.at = self._clock()
        return batch


# -- reading ----------------------------------------------------------------------------------


@dataclass
class ReportData:
    """A store's figures over a window: what `summarize` turns into the summary."""

    window_seconds: float
    counters: dict[Counter, tuple[int, int]] = field(default_factory=dict)
    examples: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)  # newest first
    units: dict[str, tuple[int, int]] = field(default_factory=dict)  # (compared, mismatched)
    dropped: dict[tuple[str, str], int] = field(default_factory=dict)


class ShadowStore(Protocol):
    """Where batches pool; read by the CLI, the dashboard and the rollout gate. Sync: the
    mirror calls `add` in a thread (`asyncio.to_thread`)."""

    def add(self, batch: ShadowBatch) -> None: ...

    def data(self, window: float | None = None, funnel: str | None = None) -> ReportData: ...

    def summary(self, window: float | None = None, **kwargs: Any) -> dict[str, Any]:
        """`summarize(self.data(window, funnel), **kwargs)`: kwargs as `summarize` takes."""
        ...

    def reset(self, funnel: str | None = None) -> None: ...

    def close(self) -> None: ...


def _rate(mismatched: int, compared: int, alpha: float) -> dict[str, Any]:
    if compared <= 0:
        return {"comparisons": 0, "mismatches": 0, "mismatch_rate": None, "interval": None}
    ci = bernoulli_cs(mismatched, compared, alpha)
    return {"comparisons": compared, "mismatches": mismatched,
            "mismatch_rate": mismatched / compared, "interval": [ci.lower, ci.upper]}


def _may_be_noise(path: str) -> bool:
    """Money, ids, statuses and items present on one side only are never called noise: a
    field of those that always differs is a systematic difference, not instability."""
    last = path.rsplit(".", 1)[-1]
    return not (path in (STATUS, OTHER_FIELD) or is_money(path) or last == "id"
                or last.endswith(("[sku]", "_id")))


def summarize(
    data: ReportData, *, funnel: str | None = None, route: str | None = None,
    fields: bool = True, examples: bool = True, alpha: float = DEFAULT_ALPHA,
    noise_min: int = DEFAULT_NOISE_MIN, examples_per_field: int = 3,
) -> dict[str, Any]:
    """The JSON-ready summary: per funnel, its units' parity, drops and, per route, the
    responses compared and (with `fields`) each field's mismatch rate, noise flag and
    (with `examples`) its newest examples."""
    funnels: dict[str, dict[str, Any]] = {}

    def entry(name: str) -> dict[str, Any]:
        if name not in funnels:
            funnels[name] = {"units": units_summary(data, name, alpha), "dropped": {},
                             "comparisons": 0, "mismatches": 0, "routes": {}}
        return funnels[name]

    for (f, r, path), (compared, mismatched) in sorted(data.counters.items()):
        if (funnel is not None and f != funnel) or (route is not None and r != route):
            continue
        routes = entry(f)["routes"]
        out = routes.setdefault(r, {**_rate(0, 0, alpha), "fields": {}} if fields else
                                _rate(0, 0, alpha))
        if path == RESPONSE:
            out.update(_rate(mismatched, compared, alpha))
            entry(f)["comparisons"] += compared
            entry(f)["mismatches"] += mismatched
            continue
        if not fields:
            continue
        noise = (_may_be_noise(path) and compared >= noise_min and mismatched == compared)
        out["fields"][path] = {
            **_rate(mismatched, compared, alpha), "money": is_money(path), "noise": noise,
            "hint": NOISE_HINT.format(n=compared) if noise else None,
        }
        if examples:
            shown = [e for e in data.examples.get((f, r), []) if e.get("field") == path]
            out["fields"][path]["examples"] = shown[:examples_per_field]
    for (f, reason), n in sorted(data.dropped.items()):
        if funnel is None or f == funnel:
            entry(f)["dropped"][reason] = n
    for f in data.units:
        if funnel is None or f == funnel:
            entry(f)
    if fields:
        for body in funnels.values():
            for r in body["routes"].values():
                r["fields"] = dict(sorted(r["fields"].items(),
                                          key=lambda kv: (-kv[1]["mismatches"], kv[0])))
    return {"window_seconds": data.window_seconds, "alpha": alpha, "funnels": funnels}


def units_summary(data: ReportData, funnel: str, alpha: float = DEFAULT_ALPHA) -> dict[str, Any]:
    compared, mismatched = data.units.get(funnel, (0, 0))
    mismatched = min(mismatched, compared)
    if compared == 0:
        return {"compared": 0, "with_mismatch": 0, "parity": None, "parity_interval": None}
    ci = bernoulli_cs(compared - mismatched, compared, alpha)
    return {"compared": compared, "with_mismatch": mismatched,
            "parity": (compared - mismatched) / compared,
            "parity_interval": [ci.lower, ci.upper]}


@dataclass(frozen=True, slots=True)
class ParityGate:
    met: bool
    parity: float | None  # share of compared units without a mismatch
    units: int  # compared units
    min_units: int
    bar: float  # the share required, 0..1
    reason: str


def parity_gate(summary: dict[str, Any], funnel: str, bar_percent: float,
                min_units: int) -> ParityGate:
    """Whether a funnel's shadow parity meets `bar_percent` over at least `min_units`
    compared units (`summary` as `summarize` returns it)."""
    bar = bar_percent / 100
    units = summary.get("funnels", {}).get(funnel, {}).get("units", {})
    n = int(units.get("compared") or 0)
    ok = n - int(units.get("with_mismatch") or 0)
    parity = ok / n if n else None
    if n < min_units or parity is None:
        return ParityGate(False, parity, n, min_units, bar,
                          f"waiting for compared units: {n} of {min_units}")
    if Decimal(ok) * 100 >= Decimal(str(bar_percent)) * n:  # exact: 999/1000 meets 99.9
        return ParityGate(True, parity, n, min_units, bar,
                          f"parity {parity:.3%} >= {bar:.3%} over {n} units")
    return ParityGate(False, parity, n, min_units, bar,
                      f"parity {parity:.3%} < {bar:.3%} over {n} units")


# -- the embedded store -------------------------------------------------------------------------


def bucket_start(at: float, size: int) -> int:
    return int(at // size) * size


class MemoryShadowReport:
    """The report of one process: counters per time bucket, the newest examples per route,
    units per funnel (LRU-bounded); everything older than `retention` is dropped."""

    def __init__(self, bucket_seconds: int = DEFAULT_BUCKET_SECONDS,
                 retention: float = DEFAULT_RETENTION, examples_per_route: int = 50,
                 max_units: int = 50_000, clock: Callable[[], float] = time.time) -> None:
        self.bucket_seconds = bucket_seconds
        self.retention = retention
        self.examples_per_route = examples_per_route
        self.max_units = max_units
        self._clock = clock
        self._lock = threading.Lock()
        self._counters: dict[int, dict[Counter, list[int]]] = {}
        self._dropped: dict[int, dict[tuple[str, str], int]] = {}
        self._examples: dict[tuple[str, str], deque[dict[str, Any]]] = {}
        # funnel -> digest -> (last compared, last mismatched or 0)
        self._units: dict[str, OrderedDict[str, tuple[float, float]]] = {}

    def add(self, batch: ShadowBatch) -> None:
        start = bucket_start(batch.at, self.bucket_seconds)
        with self._lock:
            counters = self._counters.setdefault(start, {})
            for key, (compared, mismatched) in batch.counters.items():
                counts = counters.setdefault(key, [0, 0])
                counts[0] += compared
                counts[1] += mismatched
            dropped = self._dropped.setdefault(start, {})
            for dkey, n in batch.dropped.items():
                dropped[dkey] = dropped.get(dkey, 0) + n
            for ekey, shown in batch.examples.items():
                kept = self._examples.setdefault(ekey, deque(maxlen=self.examples_per_route))
                kept.extend(shown)
            for funnel, units in batch.units.items():
                known = self._units.setdefault(funnel, OrderedDict())
                for digest, bad in units.items():
                    last_bad = batch.at if bad else known.get(digest, (0.0, 0.0))[1]
                    known[digest] = (batch.at, last_bad)
                    known.move_to_end(digest)
                while len(known) > self.max_units:
                    known.popitem(last=False)
            self._expire()

    def _expire(self) -> None:
        horizon = self._clock() - self.retention
        for buckets in (self._counters, self._dropped):
            for start in [s for s in buckets if s + self.bucket_seconds <= horizon]:
                del buckets[start]
        for known in self._units.values():
            while known and next(iter(known.values()))[0] < horizon:
                known.popitem(last=False)
        for kept in self._examples.values():
            while kept and kept[0]["at"] < horizon:
                kept.popleft()

    def data(self, window: float | None = None, funnel: str | None = None) -> ReportData:
        window = self.retention if window is None else min(window, self.retention)
        since = self._clock() - window
        first = bucket_start(since, self.bucket_seconds)
        out = ReportData(window_seconds=window)
        with self._lock:
            self._expire()
            counters: dict[Counter, list[int]] = {}
            for start, bucket in self._counters.items():
                if start < first:
                    continue
                for key, (compared, mismatched) in bucket.items():
                    if funnel is None or key[0] == funnel:
                        counts = counters.setdefault(key, [0, 0])
                        counts[0] += compared
                        counts[1] += mismatched
            out.counters = {k: (v[0], v[1]) for k, v in counters.items()}
            for start, dropped in self._dropped.items():
                if start >= first:
                    for dkey, n in dropped.items():
                        if funnel is None or dkey[0] == funnel:
                            out.dropped[dkey] = out.dropped.get(dkey, 0) + n
            out.examples = {k: [e for e in reversed(v) if e["at"] >= since]
                            for k, v in self._examples.items()
                            if funnel is None or k[0] == funnel}
            for f, known in self._units.items():
                if funnel is None or f == funnel:
                    compared = sum(1 for last, _ in known.values() if last >= since)
                    bad = sum(1 for _, last_bad in known.values() if last_bad >= since)
                    if compared:
                        out.units[f] = (compared, bad)
        return out

    def summary(self, window: float | None = None, **kwargs: Any) -> dict[str, Any]:
        return summarize(self.data(window, kwargs.get("funnel")), **kwargs)

    def reset(self, funnel: str | None = None) -> None:
        with self._lock:
            if funnel is None:
                self._counters.clear()
                self._dropped.clear()
                self._examples.clear()
                self._units.clear()
                return
            for buckets in self._counters.values():
                for key in [k for k in buckets if k[0] == funnel]:
                    del buckets[key]
            for dropped in self._dropped.values():
                for dkey in [k for k in dropped if k[0] == funnel]:
                    del dropped[dkey]
            for ekey in [k for k in self._examples if k[0] == funnel]:
                del self._examples[ekey]
            self._units.pop(funnel, None)

    def close(self) -> None:
        pass


# -- the summary in the control store (embedded mode: the CLI reads the proxy's report) ---------

SUMMARY_KEY = "shadow:report"


class MetaStore(Protocol):
    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...


def store_summary(store: MetaStore, summary: dict[str, Any]) -> None:
    store.set_meta(SUMMARY_KEY, json.dumps({"at": time.time(), **summary}, default=str))


def read_summary(store: MetaStore) -> dict[str, Any]:
    raw = store.get_meta(SUMMARY_KEY)
    summary: dict[str, Any] = json.loads(raw) if raw else {}
    return summary
