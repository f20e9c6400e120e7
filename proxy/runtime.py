"""Everything the proxy holds while it runs, wired in one place."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from control.decision import Backend, Decision
from control.lastknown import StateCache
from control.operations import ControlSnapshot, snapshot_of
from control.rollout_driver import RolloutDriver
from control.rules import Funnel, RuleSet
from control.store import ControlStore, StoreUnavailable, open_store
from control.watcher import ControlWatcher
from guardrails.alerts import WebhookAlert
from guardrails.lease import LocalLease, RedisLease
from guardrails.monitor import GuardrailMonitor, no_alert
from guardrails.report import store_report
from guardrails.telemetry import MemoryTelemetry, TelemetryRecorder, TelemetryStore
from proxy.access_log import AccessLog
from proxy.config import ProxySettings
from proxy.forward import BackendConfig, ReadAheadBudget, RequestBody, Upstream
from proxy.headers import TrustedProxies
from proxy.metrics import ProxyMetrics
from proxy.outcome import OutcomeObserver, RequestOutcome
from proxy.sticky import LocalSticky, StickyStore, starts_checkout
from shadow.idmap import IdMap, MemoryIdMap
from shadow.mirror import Headers, Mirror, MirrorSettings
from shadow.report import MemoryShadowReport, ShadowStore, store_summary

log = logging.getLogger("strangler.proxy")

# The state of a store with no rules applied: everything to legacy, on purpose.
NO_RULES = snapshot_of(0, None, frozenset()).rules_error


def tune_malloc() -> bool:
    """glibc only (elsewhere a no-op returning False). The sticky LRU and the telemetry
    hold dict tables of 1-10 MB that are reallocated as they churn. By default glibc raises
    its mmap threshold after the first such block is freed, so later ones come from the
    heap, which keeps its peak: RSS then climbs in steps for minutes
    (docs/benchmarks.md). A fixed threshold keeps large blocks on mmap, returned to the OS
    when freed; two arenas instead of eight per core serve the few worker threads."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_mmap_threshold, m_arena_max = -3, -8
        return bool(libc.mallopt(m_mmap_threshold, 128 * 1024)) and bool(
            libc.mallopt(m_arena_max, 2))
    except (OSError, AttributeError):
        return False


def state_cache_path(settings: ProxySettings) -> Path | None:
    """Where the last known control state is kept (None: nowhere but memory)."""
    if settings.state_cache is not None:
        return Path(settings.state_cache) if settings.state_cache else None
    return Path(settings.db_path).absolute().parent / "last-known-state.json"


class ProxyRuntime:
    """Wires the proxy's parts from the settings and owns their lifecycle (`start`, `stop`).

    The hot path reads `snapshot` (routing state), `sticky` and the upstreams from here;
    every other part gets only what it uses: the watcher a store and a `publish` callback,
    the monitor the telemetry, a judge and a kill function, the rollout driver a store.
    """

    def __init__(
        self, settings: ProxySettings, store: ControlStore | None = None,
        sticky: StickyStore | None = None, telemetry: TelemetryStore | None = None,
    ) -> None:
        self.settings = settings
        self.store = store or open_store(settings.redis_url, settings.db_path, initialize=False)
        self.metrics = ProxyMetrics()
        self.recorder = TelemetryRecorder(settings.telemetry_bucket_seconds)
        self.telemetry = telemetry or self._telemetry_store()
        self.observers: list[OutcomeObserver] = [self.metrics, self.recorder]
        if settings.access_log > 0:  # off: not even an observer, the hot path pays nothing
            self.observers.append(AccessLog(settings.access_log))
        self.trusted = TrustedProxies(settings.trusted_proxies)
        self.snapshot = ControlSnapshot(0, None, frozenset(), "not loaded yet")
        self.state_known = False  # a routing state was published (store or state cache)
        self.sticky = sticky or self._sticky_store()
        self._upstreams = {
            Backend.CORE: Upstream(BackendConfig(
                "core", settings.core_url, settings.core_connect_timeout,
                settings.core_read_timeout, settings.pool_size)),
            Backend.LEGACY: Upstream(BackendConfig(
                "legacy", settings.legacy_url, settings.legacy_connect_timeout,
                settings.legacy_read_timeout, settings.pool_size)),
        }
        self.monitor = GuardrailMonitor(
            store=self.store, telemetry=self.telemetry, rules=self._rules, kills=self._kills,
            metrics=self.metrics,
            alert=WebhookAlert(settings.guard_webhook_url) if settings.guard_webhook_url
            else no_alert,
        )
        self.rollouts = RolloutDriver(self.store, self._kills)
        self.lease: LocalLease | RedisLease = (
            RedisLease(settings.redis_url, self.monitor.id, settings.guard_interval * 3)
            if settings.redis_url else LocalLease()
        )
        rules_file = Path(settings.rules_file) if settings.rules_file else None
        self.watcher = ControlWatcher(
            self.store, rules_file, self.set_snapshot, poll_interval=settings.poll_interval,
            metrics=self.metrics, redis_url=settings.redis_url, may_restore=self.lease.hold,
            cache=StateCache(state_cache_path(settings)),
        )
        self.shadow_report = self._shadow_report()
        self.read_ahead = ReadAheadBudget(settings.body_buffer_total_bytes,
                                          self.metrics.read_ahead_refused.inc)
        self.mirror = Mirror(
            self._shadow_send, self._shadow_idmap(), self.shadow_report,
            MirrorSettings(max_queue=settings.shadow_queue,
                           concurrency=settings.shadow_concurrency,
                           max_busy=settings.shadow_max_busy,
                           send_timeout=settings.shadow_timeout),
            on_compared=self.metrics.shadow_compared, on_dropped=self.metrics.shadow_dropped,
        )
        self.metrics.watch(self.read_ahead, self.mirror)
        self._tasks: list[asyncio.Task[None]] = []
        self.durability: str | None = None
        self._cookie_suffix = (
            f"; Path=/; Max-Age={settings.session_cookie_max_age}; HttpOnly; SameSite=Lax"
        )

    @property
    def traffic_redis_url(self) -> str | None:
        """The Redis that sticky assignments and telemetry go to: their own when
        configured, so that traffic can never fill the control store (docs/proxy.md)."""
        return self.settings.traffic_redis_url or self.settings.redis_url

    def _sticky_store(self) -> StickyStore:
        settings = self.settings
        if self.traffic_redis_url:
            from proxy.sticky_redis import RedisSticky

            return RedisSticky(self.traffic_redis_url, settings.sticky_max_units,
                               redis_max_units=settings.sticky_redis_max_units)
        return LocalSticky(settings.sticky_max_units)

    def _telemetry_store(self) -> TelemetryStore:
        bucket = self.settings.telemetry_bucket_seconds
        max_units = self.settings.telemetry_max_units
        if self.traffic_redis_url:
            from guardrails.telemetry_redis import RedisTelemetry

            return RedisTelemetry(self.traffic_redis_url, bucket, max_units=max_units)
        return MemoryTelemetry(bucket, max_units=max_units)

    def _shadow_idmap(self) -> IdMap:
        """Legacy id -> core id per unit: in Redis when there is one, so that a unit's
        requests may be mirrored by any replica (docs/shadow.md)."""
        ttl = self.settings.shadow_id_ttl
        if self.traffic_redis_url:
            from shadow.idmap_redis import RedisIdMap

            return RedisIdMap(self.traffic_redis_url, ttl=ttl)
        return MemoryIdMap(ttl=ttl)

    def _shadow_report(self) -> ShadowStore:
        if self.traffic_redis_url:
            from shadow.report_redis import RedisShadowReport

            return RedisShadowReport(self.traffic_redis_url)
        return MemoryShadowReport()

    async def _shadow_send(self, method: str, path: str, headers: list[tuple[str, str]],
                           body: bytes) -> tuple[int, Headers, bytes]:
        """A mirrored request, straight to the core: no decision, no telemetry, no metrics of
        customer traffic (shadow traffic never reaches the guardrails)."""
        payload = RequestBody(_no_receive, len(body) + 1, body, more=False) if body else None
        response = await self.upstream(Backend.CORE).send(method, path, headers, payload)
        try:
            raw = await response.read()
            return response.status, [(n.decode("latin-1"), v.decode("latin-1"))
                                     for n, v in response.raw_headers], raw
        finally:
            response.release()

    def upstream(self, backend: Backend) -> Upstream:
        return self._upstreams[backend]

    def wrap_upstreams(self, wrap: Callable[[Upstream], Upstream]) -> None:
        """Replace each upstream with `wrap(upstream)`, before `start` (tracing does:
        proxy.tracing.TracedUpstream)."""
        self._upstreams = {backend: wrap(up) for backend, up in self._upstreams.items()}

    async def start(self) -> None:
        self.durability = await asyncio.to_thread(self._check_durability)
        await self.watcher.start()
        # Start-up objects (rules, pools, modules) never die: keep them out of the collector's
        # scans, and collect young objects less often; full collections of 20-50 ms were
        # the proxy's p99 (docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        if self.settings.malloc_tuning:
            tune_malloc()
        self._tasks.append(asyncio.create_task(
            self._survive("telemetry", self._flush_loop), name="strangler-telemetry"))
        self._tasks.append(asyncio.create_task(
            self._survive("monitor", self._monitor_loop), name="strangler-monitor"))
        await self.mirror.start()

    def _check_durability(self) -> str | None:
        try:
            problem = self.store.durability()
        except StoreUnavailable as exc:
            problem = str(exc)
        if problem is not None:
            log.warning("control store durability: %s (docs/proxy.md, Store loss)", problem)
        return problem

    async def _survive(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a background loop forever: an exception is logged and counted, then the
        loop starts again."""
        while True:
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.metrics.task_errors.labels(name).inc()
                log.exception("%s loop failed; restarting it", name)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        await self.watcher.stop()
        await self.mirror.stop()  # drains what is queued, before the core's pool closes
        await asyncio.to_thread(self.shadow_report.close)
        await self.mirror.idmap.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush_telemetry()
        await asyncio.to_thread(self.telemetry.close)
        self.lease.close()
        for upstream in self._upstreams.values():
            await upstream.close()
        await self.sticky.close()
        await asyncio.to_thread(self.store.close)

    async def flush_telemetry(self) -> None:
        """Hand the recorder's deltas to the telemetry store (all replicas pool there)."""
        batch = self.recorder.drain()
        if not batch:
            return
        try:
            await asyncio.to_thread(self.telemetry.add, batch)
        except StoreUnavailable as exc:
            self.metrics.telemetry_errors.inc()
            log.warning("telemetry not recorded: %s", exc)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self.flush_telemetry()

    async def _monitor_loop(self) -> None:
        """Judge the guardrails every `guard_interval` seconds, on one replica at a time."""
        while True:
            await asyncio.sleep(self.settings.guard_interval)
            try:
                if await asyncio.to_thread(self.lease.hold):
                    await self.flush_telemetry()
                    await self.mirror.flush()
                    await asyncio.to_thread(self.guard_tick)
            except Exception:
                log.exception("guardrail monitor tick failed")

    def guard_tick(self, now: float | None = None) -> dict[str, Any]:
        """One tick of the monitor, the shadow summary and the rollout driver; the report
        goes to the store (blocking: run it in a thread)."""
        now = time.time() if now is None else now
        report = self.monitor.tick(now)
        self.store_shadow_summary()  # before the rollouts: a parity gate reads it
        try:
            report["rollouts"] = self.rollouts.advance(report, now)
        except StoreUnavailable as exc:
            log.warning("rollouts not advanced: %s", exc)
        try:
            store_report(self.store, report)
        except StoreUnavailable as exc:
            log.warning("guardrail report not stored: %s", exc)
        return report

    def store_shadow_summary(self) -> None:
        """The shadow parity of every replica (pooled in the report store) into the control
        store, where `strangler shadow`, the dashboard and the rollout gate read it."""
        try:
            store_summary(self.store, self.shadow_report.summary())
        except Exception as exc:  # noqa: BLE001 (a stale summary costs figures, not traffic)
            log.warning("shadow summary not stored: %s", exc)

    def _rules(self) -> RuleSet | None:
        return self.snapshot.rules

    def _kills(self) -> frozenset[str]:
        return self.snapshot.kills

    def set_snapshot(self, snapshot: ControlSnapshot) -> None:
        previous = self.snapshot
        self.snapshot = snapshot
        self.state_known = True
        rules = snapshot.rules
        numeric = rules is not None and rules.version.isdigit()
        self.metrics.rules_version.set(int(rules.version) if rules and numeric else 0)
        self.metrics.set_kills(snapshot.kills, set(previous.kills))
        old = previous.rules.version if previous.rules is not None else None
        if rules is not None and rules.version != old:
            log.info("routing with rules version %s", rules.version)
        if snapshot.kills != previous.kills:
            log.warning("kill switches now: %s", sorted(snapshot.kills) or "none")

    def observe(self, outcome: RequestOutcome) -> None:
        for observer in self.observers:
            try:
                observer.observe(outcome)
            except Exception:
                log.exception("observer %r failed", observer)

    async def track_unit(
        self, funnel: Funnel, unit: str, decision: Decision, status: int,
        signals: tuple[str, ...],
    ) -> None:
        """Start, renew or end a unit's in-flight checkout (proxy.sticky.starts_checkout):
        any other answer writes nothing, so a unit that never starts a checkout costs no
        sticky state."""
        rules = self.snapshot.rules
        key = f"{funnel.name}:{unit}"
        if "order_placed" in signals:
            await self.sticky.release(key)
        elif rules is not None and starts_checkout(decision.reason, status, signals):
            await self.sticky.set(key, decision.backend, rules.sticky_ttl_seconds)

    def session_cookie(self, unit: str) -> str:
        rules = self.snapshot.rules
        name = rules.session_cookie if rules is not None else "checkout_session"
        return f"{name}={unit}{self._cookie_suffix}"

    def dead_tasks(self) -> list[str]:
        """Background loops that ended while the proxy runs (each should never end)."""
        return self.watcher.dead_tasks() + [t.get_name() for t in self._tasks if t.done()]

    def unready_reason(self) -> str | None:
        """Why this replica should get no traffic yet (/readyz), or None: it has a routing
        state, valid rules or a deliberate all-legacy state (no rules applied).

        Never the control store's health: a replica that cannot read the store routes with
        its last known state (kills win), and a shared store failing must not take every
        replica out of the load balancer at once (/_strangler/healthz reports it)."""
        if not self.state_known:
            return ("no routing state yet: the control store has not answered and there is "
                    "no last known state")
        snapshot = self.snapshot
        if snapshot.rules is None and snapshot.rules_error != NO_RULES:
            return f"no valid rules to route with: {snapshot.rules_error}"
        return None

    def describe(self) -> dict[str, Any]:
        snap = self.snapshot
        age = self.watcher.state_age()
        dead = self.dead_tasks()
        degraded = bool(self.watcher.last_error or self.watcher.store_problem or dead)
        return {
            "status": "degraded" if degraded else "ok",
            "rules_version": snap.rules.version if snap.rules else None,
            "rules_error": snap.rules_error,
            "kill_switches": sorted(snap.kills),
            "store": "redis" if self.settings.redis_url else "sqlite",
            "store_error": self.watcher.last_error,
            "store_problem": self.watcher.store_problem,
            "rules_file_error": self.watcher.rules_file_error,
            "rules_conflict": None if self.watcher.rules_conflict is None else [
                c.sentence() for c in self.watcher.rules_conflict.conflicts],
            "store_durability": self.durability,
            "dead_tasks": dead,
            "state_age_seconds": round(age, 3) if age is not None else None,
            "epoch": snap.epoch,
            "shadow": self.mirror.stats(),
            "read_ahead": self.read_ahead.stats(),
            "time": time.time(),
        }


async def _no_receive() -> dict[str, Any]:
    """The ASGI receive of a body held whole: never called."""
    raise RuntimeError("a mirrored request's body is held whole")
