"""Keeps a replica's routing state fresh: the rules file, the store, pub/sub.

- The rules file (if any) is polled by mtime and size; a changed, valid file is applied to
  the store as a new version; an invalid one is logged and rejected.
- The store's epoch is polled every `poll_interval`; in Redis mode a pub/sub message wakes
  the watcher at once, with polling as the fallback.
- Any failure keeps the last good state (rules and kill switches) and marks the replica
  degraded until the store answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from control.errors import RulesError
from control.operations import ControlSnapshot, import_rules_file, read_snapshot
from control.store import ControlStore, StoreUnavailable

log = logging.getLogger("strangler.watcher")


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class WatcherMetrics(Protocol):
    """The counters the watcher adds to (`proxy.metrics.ProxyMetrics` has them)."""

    @property
    def reload_failures(self) -> Counter: ...

    @property
    def store_errors(self) -> Counter: ...


class ControlWatcher:
    """Reads the control state from `store` (and imports `rules_file` into it) and hands
    every new snapshot to `publish`; `redis_url` adds a pub/sub wake-up to the polling."""

    def __init__(
        self, store: ControlStore, rules_file: Path | None,
        publish: Callable[[ControlSnapshot], None], *, poll_interval: float,
        metrics: WatcherMetrics, redis_url: str | None = None,
    ) -> None:
        self.store = store
        self.rules_file = rules_file
        self.publish = publish
        self.interval = poll_interval
        self.metrics = metrics
        self.redis_url = redis_url
        self.snapshot = ControlSnapshot(0, None, frozenset(), "not loaded yet")
        self.last_error: str | None = None
        self.last_refresh: float | None = None
        self._file_sig: tuple[float, int] | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def state_age(self) -> float | None:
        return None if self.last_refresh is None else time.monotonic() - self.last_refresh

    async def start(self) -> None:
        await self.check_file()
        await self.refresh(force=True)
        if self.snapshot.rules is None:
            log.error("no valid rules could be loaded (%s): every request goes to legacy",
                      self.snapshot.rules_error)
        self._tasks.append(asyncio.create_task(self._loop(), name="strangler-watcher"))
        if self.redis_url:
            self._tasks.append(asyncio.create_task(self._listen(), name="strangler-pubsub"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            await self.check_file()
            await self.refresh()

    async def check_file(self) -> None:
        path = self.rules_file
        if path is None:
            return
        try:
            stat = await asyncio.to_thread(os.stat, path)
        except OSError as exc:
            if self._file_sig is not None or self.snapshot.rules is None:
                log.error("rules file %s unreadable: %s", path, exc)
            self._file_sig = None
            return
        signature = (stat.st_mtime, stat.st_size)
        if signature == self._file_sig:
            return
        self._file_sig = signature
        try:
            record = await asyncio.to_thread(
                import_rules_file, self.store, path, actor="file-watcher"
            )
        except RulesError as exc:
            self.metrics.reload_failures.inc()
            log.error("rules file rejected, the last good rules keep serving:\n%s", exc)
        except (StoreUnavailable, OSError) as exc:
            self._file_sig = None  # try again on the next tick
            log.warning("could not import %s: %s", path, exc)
        else:
            if record is not None:
                self._wake.set()

    async def refresh(self, force: bool = False) -> None:
        try:
            epoch = await asyncio.to_thread(self.store.epoch)
            if force or epoch != self.snapshot.epoch:
                previous = self.snapshot
                snapshot = await asyncio.to_thread(read_snapshot, self.store, previous)
                if snapshot.rules_error and previous.rules is not None and (
                    snapshot.rules is previous.rules
                ):
                    self.metrics.reload_failures.inc()
                self.snapshot = snapshot
                self.publish(snapshot)
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

    async def _listen(self) -> None:
        """Wake the loop on every change published by any replica or the CLI."""
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        from control.store.redis_store import CHANNEL

        url = self.redis_url
        assert url is not None
        while True:
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
