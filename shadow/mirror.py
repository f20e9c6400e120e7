"""The asynchronous mirror: replays legacy-served requests to the core, off the customer's path.

The proxy hands each selected request (`shadow.selection`) to `Mirror.submit` after legacy's
response went out. `submit` never blocks, never raises and costs O(1): the job goes into a
bounded queue of this replica, or is dropped and counted. Workers (`concurrency` of them)
replay the jobs:

- customers first: a worker takes a job only while the event loop has room: its thread
  spent at most `max_busy` of the last moments on the CPU (customers and replays together,
  `time.thread_time` against the clock, probed every `lag_probe` seconds and smoothed), and
  a short sleep wakes up less than `busy_lag` late. The replays fill the loop's idle time up
  to that share and no further; when the customers alone keep it busier, no replay runs,
  the queue fills and further jobs are dropped (`queue_full`) instead of taking the
  customers' CPU;
- in order per unit: a unit's jobs wait in its own lane, and a lane is served by one worker
  at a time, so a cart exists in the core before its items are added; different units go
  in parallel;
- every legacy id in the path and body is replaced by the core's, from the unit's id map;
  an id not in the map yet is looked up again for `unmapped_wait` seconds (its creation may
  still be in flight, on this replica or another), then the job is dropped (`unmapped`);
- the request carries `X-Checkout-Shadow: 1`; an `Idempotency-Key` is replaced by one
  derived from it (`shadow.idmap.derive_idempotency_key`); of the customer's other headers
  only `Content-Type`, `Accept` and `Accept-Language` are sent (no cookie, no
  authorization, no forwarding headers);
- it is sent through the injected `send(method, path, headers, body)` with a timeout;
- the ids the two responses mint are recorded in the id map, the responses are compared
  (`shadow.compare`) and the results counted (`shadow.report.ShadowRecorder`), which is
  flushed to the report store every `flush_interval` seconds, in a thread.

Drops are counted by reason: `queue_full` (`max_queue` jobs or `max_queue_bytes` of bodies
and headers queued), `too_large` (a body over `max_body_bytes`),
`unmapped`, `legacy_error` (legacy answered 5xx: nothing to compare), `error` (the send
failed or timed out, the id map failed, or anything unexpected), `stopped` (submitted
before `start` or after `stop`, or still queued when the drain timed out).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from shadow.compare import compare, parse_body
from shadow.idmap import IdMap, Unmapped, derive_idempotency_key, id_pairs, rewrite_request
from shadow.report import ShadowRecorder, ShadowStore
from shadow.selection import Selection

log = logging.getLogger("strangler.shadow")

Headers = Sequence[tuple[str, str]]
# send(method, path, headers, body) -> (status, headers, body): to the core, not the proxy
Send = Callable[[str, str, list[tuple[str, str]], bytes], Awaitable[tuple[int, Headers, bytes]]]

SHADOW_HEADER = "x-checkout-shadow"
IDEMPOTENCY_HEADER = "idempotency-key"
FORWARDED_HEADERS = frozenset({"content-type", "accept", "accept-language"})
# what a job keeps of the customer's request head (raw ASGI names): nothing else is replayed
KEPT_HEADERS = frozenset(h.encode() for h in (*FORWARDED_HEADERS, "idempotency-key"))
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True, slots=True)
class MirrorJob:
    """One request legacy served, to replay: as the proxy forwarded it (path with the
    funnel prefix stripped, in `selection.params`) and legacy's answer."""

    funnel: str
    unit: str
    selection: Selection
    method: str
    headers: Headers  # the customer's request headers
    body: bytes
    legacy_status: int
    legacy_body: bytes
    legacy_headers: Headers = ()  # for its Content-Encoding


@dataclass(frozen=True, slots=True)
class MirrorSettings:
    max_queue: int = 1_000  # jobs queued on this replica: a backlog of seconds, not minutes
    max_queue_bytes: int = 32 * 1024 * 1024  # their request and legacy response bodies
    concurrency: int = 4  # units replayed at once
    send_timeout: float = 5.0
    unmapped_wait: float = 1.0  # how long an unknown id is looked up again
    unmapped_poll: float = 0.05
    max_body_bytes: int = 64 * 1024  # request or legacy response body (the contract's limit)
    flush_interval: float = 1.0
    drain_timeout: float = 5.0
    # customers first: replays wait while the event loop lags more than this behind (it is
    # busy serving customers, or replaying already), so the shadow never takes the CPU the
    # customers need; what waits too long is dropped at `max_queue` as queue_full
    busy_lag: float = 0.002
    # ... and while its thread was on the CPU more than this share of the time (customers
    # and replays together): a saturated proxy replays nothing, an idle one replays freely
    max_busy: float = 0.75
    lag_probe: float = 0.02  # how often the lag and the busy share are measured (seconds)
    busy_smoothing: float = 0.3  # weight of the newest probe in the busy share (EWMA)


def mirror_headers(method: str, headers: Headers, body: bytes) -> list[tuple[str, str]]:
    """The headers of the replayed request (see the module's docstring)."""
    out = [(name.lower(), value) for name, value in headers
           if name.lower() in FORWARDED_HEADERS]
    key = next((v for n, v in headers if n.lower() == IDEMPOTENCY_HEADER), None)
    if key is not None:
        out.append((IDEMPOTENCY_HEADER, derive_idempotency_key(key)))
    out.append((SHADOW_HEADER, "1"))
    if body or method in _BODY_METHODS:
        out.append(("content-length", str(len(body))))
    return out


def _header(headers: Headers, name: str) -> str | None:
    return next((v for n, v in headers if n.lower() == name), None)


class Mirror:
    """The per-replica mirror. Use from one event loop: `await start()`, `submit()` from the
    proxy's request handling, `await stop()` at shutdown (drains the queue)."""

    def __init__(
        self, send: Send, idmap: IdMap, store: ShadowStore | None = None,
        settings: MirrorSettings | None = None, *,
        recorder: ShadowRecorder | None = None,
        on_compared: Callable[[str, str, bool], None] | None = None,
        on_dropped: Callable[[str, str, int], None] | None = None,
        cpu_time: Callable[[], float] = time.thread_time,
    ) -> None:
        self.send = send
        self.idmap = idmap
        self.store = store
        self.settings = settings or MirrorSettings()
        self.recorder = recorder or ShadowRecorder()
        self.on_compared = on_compared
        self.on_dropped = on_dropped
        self.cpu_time = cpu_time  # the CPU seconds of the loop's thread (tests inject one)
        self._lanes: dict[str, deque[MirrorJob]] = {}
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._queued = 0
        self._queued_bytes = 0
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._accepting = False
        self._tasks: list[asyncio.Task[None]] = []
        self.lag = 0.0  # the event loop's lag at the last probe (seconds)
        self.busy = 0.0  # the loop thread's share of time on the CPU, smoothed (0..1)
        self.paused = 0  # times a worker waited for the loop to be less busy
        self._gate = asyncio.Event()  # set while the loop has room for replays
        self._gate.set()
        self.submitted = 0
        self.sent = 0
        self.compared = 0
        self.mismatched = 0
        self.flush_errors = 0
        self.dropped: dict[str, int] = {}
        self._drops: dict[tuple[str, str], int] = {}  # not yet handed to the report

    # -- the caller's side -------------------------------------------------------------------

    def submit(self, job: MirrorJob) -> bool:
        """Queue a job; False when it was dropped (and counted). Never blocks or raises."""
        try:
            if not self._accepting:
                return self._drop(job.funnel, "stopped")
            limit = self.settings.max_body_bytes
            if len(job.body) > limit or len(job.legacy_body) > limit:
                return self._drop(job.funnel, "too_large")
            size = _size(job)
            if (self._queued >= self.settings.max_queue
                    or self._queued_bytes + size > self.settings.max_queue_bytes):
                return self._drop(job.funnel, "queue_full")
            lane = self._lanes.get(job.unit)
            if lane is None:
                lane = self._lanes[job.unit] = deque()
                self._ready.put_nowait(job.unit)
            lane.append(job)
            self._queued += 1
            self._queued_bytes += size
            self.submitted += 1
            self._idle.clear()
            return True
        except Exception:  # the customer's request must never see the shadow
            log.exception("shadow submit failed")
            self.dropped["error"] = self.dropped.get("error", 0) + 1
            return False

    def has_room(self) -> bool:
        """Whether a job could be queued now: the caller checks before building one, so
        that a full queue costs a request no more than this."""
        return (self._accepting and self._queued < self.settings.max_queue
                and self._queued_bytes < self.settings.max_queue_bytes)

    def admit(self, funnel: str) -> bool:
        """`has_room`, and when there is none the request counted as dropped (`queue_full`):
        one call for the proxy's hot path, which then builds and submits the job."""
        if self.has_room():
            return True
        self._drop(funnel, "queue_full" if self._accepting else "stopped")
        return False

    def drop(self, funnel: str, reason: str) -> None:
        """Count a request the caller did not hand over (a full queue, a streamed body)."""
        self._drop(funnel, reason)

    def _drop(self, funnel: str, reason: str) -> bool:
        """Count a drop: two dict increments here (drops come by the thousand when the
        queue is full); the report and `on_dropped` get them at the next flush."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        key = (funnel, reason)
        self._drops[key] = self._drops.get(key, 0) + 1
        return False

    def _hand_over_drops(self) -> None:
        drops, self._drops = self._drops, {}
        for (funnel, reason), n in drops.items():
            self.recorder.dropped(funnel, reason, n)
            if self.on_dropped is not None:
                self.on_dropped(funnel, reason, n)

    @property
    def queued(self) -> int:
        return self._queued

    def stats(self) -> dict[str, Any]:
        return {
            "accepting": self._accepting, "queued": self._queued,
            "queued_bytes": self._queued_bytes, "in_flight": self._in_flight,
            "lanes": len(self._lanes), "submitted": self.submitted, "sent": self.sent,
            "compared": self.compared, "mismatched": self.mismatched,
            "dropped": dict(self.dropped), "flush_errors": self.flush_errors,
            "loop_lag_ms": round(self.lag * 1000, 3),
            "loop_busy": round(self.busy, 3), "paused": self.paused,
        }

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._accepting:
            return
        self._accepting = True
        self._tasks = [asyncio.create_task(self._worker(), name=f"strangler-shadow-{i}")
                       for i in range(self.settings.concurrency)]
        self._tasks.append(asyncio.create_task(self._flush_loop(),
                                               name="strangler-shadow-flush"))
        self._tasks.append(asyncio.create_task(self._probe_lag(),
                                               name="strangler-shadow-lag"))

    async def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, let the queue drain (at most `timeout`, default the settings'
        drain_timeout), drop what is left, flush the report."""
        self._accepting = False
        wait = self.settings.drain_timeout if timeout is None else timeout
        try:
            await asyncio.wait_for(self._idle.wait(), wait)
        except TimeoutError:
            log.warning("shadow mirror: %d jobs still queued at stop are dropped", self._queued)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for lane in self._lanes.values():
            for job in lane:
                self._drop(job.funnel, "stopped")
        self._lanes.clear()
        self._queued = 0
        self._queued_bytes = 0
        self._ready = asyncio.Queue()
        self._gate.set()
        self._idle.set()
        await self.flush()

    async def wait_idle(self) -> None:
        """Until nothing is queued or in flight (for tests and shutdown)."""
        await self._idle.wait()

    async def flush(self) -> None:
        self._hand_over_drops()
        batch = self.recorder.drain()
        if not batch or self.store is None:
            return
        try:
            await asyncio.to_thread(self.store.add, batch)
        except Exception as exc:  # noqa: BLE001 (a lost batch costs figures, never traffic)
            self.flush_errors += 1
            log.warning("shadow report flush failed: %r", exc)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_interval)
            await self.flush()

    # -- workers -----------------------------------------------------------------------------

    async def _probe_lag(self) -> None:
        """Measure, every `lag_probe` seconds, how late a short sleep wakes up (the time the
        loop spends on everything else between two turns) and the share of the time the
        loop's thread was on the CPU (this coroutine runs on it, so `thread_time` is the
        loop's: customers, replays, the sockets' system calls); open or close the workers'
        gate accordingly."""
        loop = asyncio.get_running_loop()
        s = self.settings
        period = s.lag_probe
        cpu = self.cpu_time()
        while True:
            started = loop.time()
            await asyncio.sleep(period)
            now, cpu_now = loop.time(), self.cpu_time()
            self.lag = max(0.0, now - started - period)
            share = min(1.0, (cpu_now - cpu) / max(now - started, 1e-6))
            cpu = cpu_now
            self.busy += s.busy_smoothing * (share - self.busy)
            if self.lag <= s.busy_lag and self.busy <= s.max_busy:
                self._gate.set()
            else:
                self._gate.clear()

    async def _worker(self) -> None:
        while True:
            unit = await self._ready.get()
            if not self._gate.is_set():  # customers first (checked once there is work: a
                self.paused += 1         # worker may have waited for it since an idle moment)
                await self._gate.wait()
            lane = self._lanes.get(unit)
            if not lane:
                continue
            job = lane.popleft()
            self._queued -= 1
            self._queued_bytes -= _size(job)
            self._in_flight += 1
            try:
                await self._replay(job)
            except asyncio.CancelledError:  # stop() gave up on the drain
                self._drop(job.funnel, "stopped")
                raise
            except Exception as exc:  # noqa: BLE001 (counted; the worker carries on)
                log.debug("shadow replay failed: %r", exc)
                self._drop(job.funnel, "error")
            finally:
                self._in_flight -= 1
                if lane:
                    self._ready.put_nowait(unit)
                else:
                    self._lanes.pop(unit, None)
                if self._queued == 0 and self._in_flight == 0:
                    self._idle.set()

    async def _ids(self, job: MirrorJob) -> tuple[dict[str, str], Any]:
        """The unit's id map and the rewritten request (or Unmapped after the wait)."""
        route, params = job.selection.route, job.selection.params
        ids = await self.idmap.get(job.unit)
        rewritten = rewrite_request(route, params, job.body, ids)
        if isinstance(rewritten, Unmapped) and job.legacy_status != 404:
            deadline = time.monotonic() + self.settings.unmapped_wait
            while isinstance(rewritten, Unmapped) and time.monotonic() < deadline:
                await asyncio.sleep(self.settings.unmapped_poll)
                ids = await self.idmap.get(job.unit)
                rewritten = rewrite_request(route, params, job.body, ids)
        return ids, rewritten

    async def _replay(self, job: MirrorJob) -> None:
        if job.legacy_status >= 500:
            self._drop(job.funnel, "legacy_error")
            return
        ids, rewritten = await self._ids(job)
        if isinstance(rewritten, Unmapped):
            self._drop(job.funnel, "unmapped")
            return
        headers = mirror_headers(job.method, job.headers, rewritten.body)
        try:
            status, core_headers, raw = await asyncio.wait_for(
                self.send(job.method, rewritten.path, headers, rewritten.body),
                self.settings.send_timeout)
        except Exception as exc:  # noqa: BLE001 (the core failing is counted, not raised)
            log.debug("shadow send failed: %r", exc)
            self._drop(job.funnel, "error")
            return
        self.sent += 1
        legacy = parse_body(job.legacy_body, _header(job.legacy_headers, "content-encoding"))
        core = parse_body(raw, _header(core_headers, "content-encoding"))
        if 200 <= job.legacy_status < 300 and 200 <= status < 300:
            pairs = {k: v for k, v in id_pairs(legacy, core).items() if k not in ids}
            if pairs:
                await self.idmap.add(job.unit, pairs)
                ids = {**pairs, **ids}
        config = job.selection.config
        results = compare(job.legacy_status, legacy, status, core, ids=ids,
                          ignore=config.ignore, tolerances=config.tolerance_map())
        resource = None
        if isinstance(legacy, dict) and isinstance(core, dict):
            lid, cid = legacy.get("id"), core.get("id")
            if isinstance(lid, str) and isinstance(cid, str):
                resource = (lid, cid)
        route = job.selection.route_key
        self.recorder.observe(job.funnel, job.unit, route, results, resource)
        matched = all(r.equal for r in results)
        self.compared += 1
        self.mismatched += not matched
        if self.on_compared is not None:
            self.on_compared(job.funnel, route, matched)


def _size(job: MirrorJob) -> int:
    """What a queued job holds, in bytes: its bodies and its headers."""
    heads = sum(len(n) + len(v) for n, v in job.headers)
    heads += sum(len(n) + len(v) for n, v in job.legacy_headers)
    return len(job.body) + len(job.legacy_body) + heads
