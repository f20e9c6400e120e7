"""Keeps a replica's routing state fresh: the rules file, the store, pub/sub.

- The rules file (if any) is polled by mtime and size; a changed, valid file is applied to
  the store as a new version; an invalid one is logged and rejected.
- The store is polled every `poll_interval` for its identity and epoch; in Redis mode a
  pub/sub message wakes the watcher at once, with polling as the fallback. A change of
  either (not the epoch alone) makes the replica read the state again.
- Any failure keeps the last good state (rules and kill switches) and marks the replica
  degraded until the store answers again. Every loop survives any exception: it is logged,
  counted and retried; a loop that ended anyway fails the health check (`dead_tasks`).

Store loss. Each store carries an identity (`StoreIdentity`). When the store this replica
knew is gone (a SQLite file deleted or replaced, a Redis that came back empty), the
replica keeps routing with its last known state, never imports the rules file into the
lost store, reports degraded with the reason, and still obeys every kill switch it can read
from whatever store is there now (kills win: a lost store means more legacy, never more
core). A store that is empty (identity None) is restored from the last known state by the
replica that may (`may_restore`: the monitor lease holder), which audits the restore; the
restored store names the old generation, so every replica accepts it. A store with another
identity is not touched: an operator decides (docs/proxy.md, "Store loss").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from control.errors import RulesConflict, RulesError
from control.lastknown import StateCache
from control.operations import (
    CONFLICT_KEY,
    FILE_ERROR_KEY,
    ControlSnapshot,
    import_rules_file,
    snapshot_of,
)
from control.store import (
    AuditEntry,
    ControlStore,
    KillSwitch,
    RulesVersion,
    StoreIdentity,
    StoreLost,
    StoreUnavailable,
    VersionConflict,
)

log = logging.getLogger("strangler.watcher")

ACTOR = "file-watcher"
RESTORE_ACTOR = "store-restore"


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Gauge(Protocol):
    def set(self, value: float) -> None: ...


class LabeledCounter(Protocol):
    def labels(self, *values: str) -> Counter: ...


class WatcherMetrics(Protocol):
    """The counters the watcher adds to (`proxy.metrics.ProxyMetrics` has them)."""

    @property
    def reload_failures(self) -> Counter: ...

    @property
    def store_errors(self) -> Counter: ...

    @property
    def task_errors(self) -> LabeledCounter: ...

    @property
    def rules_conflicts(self) -> Gauge: ...

    @property
    def rules_file_rejected(self) -> Gauge: ...


def conflict_json(conflict: RulesConflict) -> str:
    return json.dumps({"file": conflict.source, "at": time.time(), "conflicts": [
        {"slot": c.slot, "file": c.file_value, "active": c.active_value,
         "sentence": c.sentence()} for c in conflict.conflicts]}, default=str)


def _never() -> bool:
    return False


class ControlWatcher:
    """Reads the control state from `store` (and imports `rules_file` into it) and hands
    every new snapshot to `publish`; `redis_url` adds a pub/sub wake-up to the polling;
    `may_restore` says whether this replica may restore a lost store; `cache` keeps the
    last known state across restarts."""

    def __init__(
        self, store: ControlStore, rules_file: Path | None,
        publish: Callable[[ControlSnapshot], None], *, poll_interval: float,
        metrics: WatcherMetrics, redis_url: str | None = None,
        may_restore: Callable[[], bool] = _never, cache: StateCache | None = None,
    ) -> None:
        self.store = store
        self.rules_file = rules_file
        self.publish = publish
        self.interval = poll_interval
        self.metrics = metrics
        self.redis_url = redis_url
        self.may_restore = may_restore
        self.cache = cache or StateCache(None)
        self.known = self.cache.load()
        self.snapshot = ControlSnapshot(0, None, frozenset(), "not loaded yet")
        self.last_error: str | None = None
        self.store_problem: str | None = None
        self.rules_conflict: RulesConflict | None = None
        self.rules_file_error: str | None = None
        self._conflict_version: int | None = None
        self.last_refresh: float | None = None
        self._seen: tuple[str, int] | None = None
        self._file_sig: tuple[float, int] | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def state_age(self) -> float | None:
        return None if self.last_refresh is None else time.monotonic() - self.last_refresh

    def dead_tasks(self) -> list[str]:
        """Background loops that ended although the watcher runs: a failed health check."""
        return [t.get_name() for t in self._tasks if t.done()]

    async def start(self) -> None:
        if self.known.rules is not None:  # route with what we had until the store answers
            self._publish_known("last known state (before the store answered)")
        await self.refresh(force=True)
        if await self.check_file():
            await self.refresh()
        if self.snapshot.rules is None:
            log.error("no valid rules could be loaded (%s): every request goes to legacy",
                      self.snapshot.rules_error)
        self._tasks.append(asyncio.create_task(
            self._survive("watcher", self._tick), name="strangler-watcher"))
        if self.redis_url:
            self._tasks.append(asyncio.create_task(
                self._survive("pubsub", self._listen), name="strangler-pubsub"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _survive(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run `body` forever: an exception is logged with its cause, counted, and the loop
        goes on after a pause."""
        while True:
            try:
                await body()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.metrics.task_errors.labels(name).inc()
                log.exception("%s loop failed; retrying", name)
                await asyncio.sleep(self.interval)

    async def _tick(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.interval)
        self._wake.clear()
        if await self.check_file():
            self._wake.set()
        await self.refresh()

    # -- the rules file --------------------------------------------------------------------

    async def check_file(self) -> bool:
        """Import the rules file if it changed; True when a new version was applied."""
        path = self.rules_file
        if path is None or self.store_problem is not None:  # never into a lost store
            return False
        try:
            stat = await asyncio.to_thread(os.stat, path)
        except OSError as exc:
            if self._file_sig is not None or self.snapshot.rules is None:
                log.error("rules file %s unreadable: %s", path, exc)
            self._file_sig = None
            return False
        signature = (stat.st_mtime, stat.st_size)
        if signature == self._file_sig and not self._conflict_may_resolve():
            return False
        self._file_sig = signature
        try:
            record = await asyncio.to_thread(import_rules_file, self.store, path, actor=ACTOR)
        except RulesError as exc:
            self.metrics.reload_failures.inc()
            log.error("rules file rejected, the last good rules keep serving:\n%s", exc)
            await self._file_error(str(exc))
            return False
        except RulesConflict as exc:
            await self._conflict(exc)
            return False
        except VersionConflict as exc:  # another replica applied first: look again
            self._file_sig = None
            log.info("rules file %s: %s; checking again", path, exc)
            return False
        except (StoreUnavailable, OSError) as exc:
            self._file_sig = None  # try again on the next tick
            log.warning("could not import %s: %s", path, exc)
            return False
        if self.rules_conflict is not None:
            await self._conflict(None)
        if self.rules_file_error is not None:
            await self._file_error(None)
        return record is not None

    async def _file_error(self, error: str | None) -> None:
        """A rejected edit stays visible (state, status, dashboard, metric) until a valid
        file arrives."""
        self.rules_file_error = error
        self.metrics.rules_file_rejected.set(0 if error is None else 1)
        path = str(self.rules_file.resolve()) if self.rules_file is not None else None
        await asyncio.to_thread(self.store.set_meta, FILE_ERROR_KEY, "" if error is None
                                else json.dumps({"file": path, "error": error,
                                                 "at": time.time()}))

    def _conflict_may_resolve(self) -> bool:
        """A refused edit is tried again when the active rules change (a ramp back)."""
        rules = self.known.rules
        return self.rules_conflict is not None and rules is not None and (
            rules.version != self._conflict_version)

    async def _conflict(self, conflict: RulesConflict | None) -> None:
        """Record a refused edit (or its resolution) where status and the dashboard see it:
        this replica's state, a metric, and the store's meta."""
        if conflict is not None and (self.rules_conflict is None or str(conflict) != str(
                self.rules_conflict)):
            log.error("rules file edit refused as a conflict, the active rules keep "
                      "serving:\n%s", conflict)
        elif conflict is None:
            log.warning("rules file conflict resolved: the file applies again")
        self.rules_conflict = conflict
        self._conflict_version = self.known.rules.version if self.known.rules else None
        self.metrics.rules_conflicts.set(len(conflict.conflicts) if conflict else 0)
        await asyncio.to_thread(self.store.set_meta, CONFLICT_KEY, "" if conflict is None
                                else conflict_json(conflict))

    # -- the store -------------------------------------------------------------------------

    async def refresh(self, force: bool = False) -> None:
        try:
            identity = await asyncio.to_thread(self.store.identity)
            problem = await self._check_identity(identity)
            if problem is not None:
                await self._hold(problem)
            else:
                await self._read(force)
        except StoreLost as exc:
            await self._lost_file(str(exc))
        except StoreUnavailable as exc:
            self.metrics.store_errors.inc()
            if self.last_error is None:
                log.error("control store unavailable, keeping the last known state: %s", exc)
            self.last_error = str(exc)
            return
        if self.last_error is not None:
            log.warning("control store reachable again")
        self.last_error = None
        self.last_refresh = time.monotonic()

    async def _check_identity(self, identity: StoreIdentity | None) -> str | None:
        """None when the store is the one this replica knows (or a new one it adopts, or
        one it just restored); else why it is not."""
        known = self.known.generation
        if identity is not None and (known is None or identity.continues(known)):
            self._adopt(identity)
            return None
        if identity is None and known is None:  # a new store, and nothing known: first start
            self._adopt(await asyncio.to_thread(self.store.initialize))
            return None
        if identity is None:
            if await self._restore():
                return None
            return "the control store lost its data (empty, no identity)"
        return (f"the control store is another one (generation {identity.generation}, "
                f"expected {known}): it was replaced")

    def _adopt(self, identity: StoreIdentity) -> None:
        if self.store_problem is not None:
            log.warning("control store %s is ours again: routing from it",
                        identity.generation)
        self.store_problem = None
        if self.known.generation != identity.generation:
            self.known.generation = identity.generation
            self.cache.save(self.known)

    async def _restore(self) -> bool:
        if not await asyncio.to_thread(self.may_restore):
            return False
        state = self.known.restore_state()
        await asyncio.to_thread(self.store.restore, state)
        what = (f"rules version {state.rules.version if state.rules else 'none'}, kill "
                f"switches {sorted(self.known.kills) or 'none'}, {len(state.audit)} audit "
                "entries")
        await asyncio.to_thread(self.store.record_audit, AuditEntry(
            time.time(), RESTORE_ACTOR, "store.restore", "control store",
            f"the store lost its data; restored this replica's last known state ({what})",
            {"generation": state.identity.generation, "restored_from": self.known.generation}))
        log.critical("control store was empty: restored %s as generation %s", what,
                     state.identity.generation)
        self._adopt(state.identity)
        self._seen = None
        return True

    async def _lost_file(self, problem: str) -> None:
        """A SQLite file deleted or replaced: read the file now at the path (created empty
        when missing), then judge it like any other store."""
        await asyncio.to_thread(self.store.reconnect)
        identity = await asyncio.to_thread(self.store.identity)
        problem_now = await self._check_identity(identity)
        if problem_now is None:
            await self._read(force=True)
        else:
            await self._hold(f"{problem}; {problem_now}")

    async def _hold(self, problem: str) -> None:
        """Route with the last known state plus every kill switch the store has now."""
        if problem != self.store_problem:
            log.critical("%s: routing with the last known state (rules version %s, kill "
                         "switches %s); no rules file import until it is resolved", problem,
                         self.known.rules.version if self.known.rules else "none",
                         sorted(self.known.kills) or "none")
            self.store_problem = problem
        kills = await asyncio.to_thread(self.store.kill_switches)
        merged = {**kills, **self.known.kills}
        if set(merged) != set(self.snapshot.kills):
            self.known.kills = merged
            self.cache.save(self.known)
        self._publish_known(problem)

    def _publish_known(self, why: str) -> None:
        rules = self.known.rules
        previous = self.snapshot if self.snapshot.rules is not None else None
        snapshot = snapshot_of(self.snapshot.epoch, rules, frozenset(self.known.kills),
                               previous)
        if snapshot != self.snapshot:
            self.snapshot = snapshot
            self.publish(snapshot)

    async def _read(self, force: bool) -> None:
        epoch = await asyncio.to_thread(self.store.epoch)
        seen = (self.known.generation or "", epoch)
        if not force and seen == self._seen:
            return
        active, kills, audit = await asyncio.to_thread(self._read_state)
        previous = self.snapshot
        same_rules = (active is not None and self.known.rules is not None
                      and active.digest == self.known.rules.digest)
        snapshot = snapshot_of(epoch, active, frozenset(kills),
                               previous if same_rules else None)
        if snapshot.rules_error and previous.rules is not None and active is not None:
            self.metrics.reload_failures.inc()
            if snapshot.rules is None:  # keep routing with the last good rules
                snapshot = ControlSnapshot(epoch, previous.rules, snapshot.kills,
                                           snapshot.rules_error)
        if snapshot.rules_error is None or active is None:
            self.known.rules = active
        self.known.kills = kills
        self.known.remember_audit(audit)
        self.cache.save(self.known)
        self._seen = seen
        self.snapshot = snapshot
        self.publish(snapshot)

    def _read_state(self) -> tuple[RulesVersion | None, dict[str, KillSwitch], list[AuditEntry]]:
        store = self.store
        return store.active_rules(), store.kill_switches(), store.audit_log(50)

    async def _listen(self) -> None:
        """Wake the loop on every change published by any replica or the CLI."""
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        from control.store.redis_store import CHANNEL

        url = self.redis_url
        assert url is not None
        client = aioredis.Redis.from_url(url)
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(CHANNEL)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._wake.set()
        except (RedisError, OSError) as exc:
            log.debug("pub/sub lost (%s); polling continues", exc)
            await asyncio.sleep(self.interval)
        finally:
            await client.aclose()
