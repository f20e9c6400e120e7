"""A lost, replaced or flushed control store never routes customers toward the core: the
replicas keep their last known state (kills win), say so on healthz, never import the
rules file into the lost store, and one of them restores it, audited (issue: kill switch
trust, cases 4, 5, 9 and 10). Real SQLite files, a real Redis, real HTTP servers."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from control import operations
from control.lastknown import StateCache
from control.store import RestoreState, StoreIdentity, open_store
from control.store.redis_store import RedisControlStore
from control.watcher import ControlWatcher
from proxy.config import ProxySettings
from proxy.main import UVICORN_OPTIONS, create_app
from proxy.metrics import ProxyMetrics
from tests.integration.conftest import RULES, TEST_DEFAULTS
from tests.support.backends import EchoBackend
from tests.support.processes import wait_until
from tests.support.servers import ServerThread, serve

IE = {"X-Checkout-Funnel": "warranties", "X-Country": "IE"}  # 100 % core by the rules
OTHER = {"X-Checkout-Funnel": "nope", "X-Country": "IE"}


def decision(url: str, headers: dict[str, str]) -> str:
    session = {"X-Checkout-Session": f"unit-{uuid.uuid4().hex}"}
    r = httpx.post(url + "/carts", headers={**headers, **session}, timeout=5)
    return r.headers["x-checkout-decision"].split(";")[0]


def state(url: str) -> dict[str, Any]:
    return httpx.get(url + "/_strangler/state", timeout=5).json()


@contextmanager
def proxies(tmp: Path, n: int, **settings: Any) -> Iterator[list[ServerThread]]:
    """`n` proxies on shared backends; each its own state cache under tmp/replica-i."""
    with ExitStack() as stack:
        core = stack.enter_context(serve(EchoBackend("core")))
        legacy = stack.enter_context(serve(EchoBackend("legacy")))
        servers = []
        for i in range(n):
            home = tmp / f"replica-{i}"
            home.mkdir(exist_ok=True)
            config = {"db_path": str(home / "control.sqlite3"), **settings}
            app = create_app(ProxySettings(
                core_url=core.url, legacy_url=legacy.url, poll_interval=0.1,
                forward_path_prefixes=[], **{**TEST_DEFAULTS, **config}))
            servers.append(stack.enter_context(serve(app, **UVICORN_OPTIONS)))
        yield servers


# -- SQLite: the file deleted or replaced ---------------------------------------------------

def test_a_deleted_sqlite_file_is_noticed_restored_and_a_later_kill_reaches_the_proxy(
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    db = tmp_path / "replica-0" / "control.sqlite3"
    with proxies(tmp_path, 1, rules_file=str(rules)) as [proxy]:
        store = open_store(None, str(db), create=False)
        operations.kill(store, "warranties", actor="oncall", reason="INC-1")
        wait_until(lambda: decision(proxy.url, IE) == "KILL_SWITCH", 5, "the kill")
        generation = store.identity().generation
        store.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        restored = wait_until(lambda: db.exists() and (open_store(
            None, str(db), create=False).identity()), 10, "the store restored")
        assert restored.restored_from == generation
        assert all(decision(proxy.url, IE) == "KILL_SWITCH" for _ in range(20))
        store = open_store(None, str(db), create=False)
        assert set(store.kill_switches()) == {"warranties"}
        actions = [e.action for e in store.audit_log(10)]
        assert actions[0] == "store.restore" and "kill" in actions  # the audit survived
        operations.kill(store, None, actor="oncall", reason="INC-2: everything out")
        store.close()
        wait_until(lambda: decision(proxy.url, OTHER) == "KILL_SWITCH", 5,
                   "a kill written to the new file")
        assert state(proxy.url)["status"] == "ok"


def test_a_replaced_sqlite_file_degrades_and_kills_still_win(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    db = tmp_path / "replica-0" / "control.sqlite3"
    with proxies(tmp_path, 1, rules_file=str(rules)) as [proxy]:
        store = open_store(None, str(db), create=False)
        operations.kill(store, "warranties", actor="oncall", reason="INC-1")
        store.close()
        wait_until(lambda: decision(proxy.url, IE) == "KILL_SWITCH", 5, "the kill")
        other = tmp_path / "other.sqlite3"
        foreign = open_store(None, str(other))  # another store, with rules of its own
        operations.apply_rules_text(foreign, RULES.replace("percent: 100", "percent: 0"),
                                    source="x", actor="x", reason="another store")
        foreign.close()
        os.replace(other, db)
        seen = wait_until(lambda: (s := state(proxy.url))["store_problem"] and s, 10,
                          "the replaced file noticed")
        assert seen["status"] == "degraded" and "replaced" in seen["store_problem"]
        assert httpx.get(proxy.url + "/_strangler/healthz").status_code == 503
        assert all(decision(proxy.url, IE) == "KILL_SWITCH" for _ in range(20))
        rules.write_text(RULES + "\n# touched\n")  # no import into a store that is not ours
        replaced = open_store(None, str(db), create=False)
        operations.kill(replaced, None, actor="oncall", reason="kill in the new file")
        wait_until(lambda: decision(proxy.url, OTHER) == "KILL_SWITCH", 5,
                   "a kill in the replacing file is obeyed")
        assert replaced.active_rules().version == 1  # the file was not imported into it
        replaced.close()


# -- Redis: flushed, restarted replicas ---------------------------------------------------

@pytest.mark.redis
def test_a_flushed_redis_never_brings_core_traffic_back(tmp_path: Path,
                                                        redis_clean_url: str) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    settings = {"redis_url": redis_clean_url, "rules_file": str(rules),
                "guard_interval": 0.2}
    with proxies(tmp_path, 2, **settings) as replicas:
        store = RedisControlStore(redis_clean_url)
        wait_until(lambda: store.active_rules(), 5, "the rules imported")
        operations.kill(store, "warranties", actor="oncall", reason="INC-1")
        for r in replicas:
            wait_until(lambda r=r: decision(r.url, IE) == "KILL_SWITCH", 5, "the kill")
        generation = store.identity().generation
        redis.Redis.from_url(redis_clean_url).flushdb()
        rules.write_text(RULES + "\n# touched after the loss\n")
        served = [decision(replicas[i % 2].url, IE) for i in range(79)]
        assert served == ["KILL_SWITCH"] * 79
        identity = wait_until(lambda: store.identity(), 10, "a replica restores the store")
        assert identity.restored_from == generation
        assert set(store.kill_switches()) == {"warranties"}
        actions = [e.action for e in store.audit_log(20)]
        assert "store.restore" in actions and "kill" in actions
        for r in replicas:
            wait_until(lambda r=r: state(r.url)["status"] == "ok", 5, "healthy again")
            assert decision(r.url, IE) == "KILL_SWITCH"
        store.close()


@pytest.mark.redis
def test_a_replica_restarted_while_redis_is_empty_keeps_the_kill_switch(
    tmp_path: Path, redis_clean_url: str,
) -> None:
    settings = {"redis_url": redis_clean_url}
    store = RedisControlStore(redis_clean_url)
    with proxies(tmp_path, 1, **settings) as [proxy]:
        operations.apply_rules_text(store, RULES, source="t", actor="t", reason="seed")
        operations.kill(store, "warranties", actor="oncall", reason="INC-1")
        wait_until(lambda: decision(proxy.url, IE) == "KILL_SWITCH", 5, "the kill")
    redis.Redis.from_url(redis_clean_url).flushdb()  # lost while the replica was down
    with proxies(tmp_path, 1, **settings) as [proxy]:  # same home: its last known state
        assert decision(proxy.url, IE) == "KILL_SWITCH"
        wait_until(lambda: set(store.kill_switches()) == {"warranties"}, 10, "restored")
    store.close()


# -- the watcher: version conflicts, dead loops, identity over epoch ------------------------

class Published:
    def __init__(self) -> None:
        self.snapshots: list[Any] = []

    def __call__(self, snapshot: Any) -> None:
        self.snapshots.append(snapshot)


def watcher_on(store: Any, rules: Path | None = None, **kw: Any) -> tuple[ControlWatcher,
                                                                            Published]:
    published = Published()
    return ControlWatcher(store, rules, published, poll_interval=0.05,
                          metrics=ProxyMetrics(), **kw), published


def test_two_replicas_importing_the_same_edits_both_survive_and_obey_a_kill(
    tmp_path: Path,
) -> None:
    """Before: the loser's VersionConflict ended its watcher task silently and that replica
    ignored every later kill switch."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    db = tmp_path / "control.sqlite3"
    stores = [open_store(None, str(db)) for _ in range(2)]
    watchers = [watcher_on(s, rules)[0] for s in stores]

    async def scenario() -> None:
        await asyncio.gather(*(w.start() for w in watchers))
        for i in range(25):
            rules.write_text(RULES + f"\n# edit {i}\n")
            await asyncio.sleep(0.15)
        operations.kill(stores[0], "warranties", actor="oncall", reason="INC-3")
        for w in watchers:
            for _ in range(100):
                if "warranties" in w.snapshot.kills:
                    break
                await asyncio.sleep(0.05)
        assert all("warranties" in w.snapshot.kills for w in watchers)
        assert all(w.dead_tasks() == [] for w in watchers)
        await asyncio.gather(*(w.stop() for w in watchers))

    asyncio.run(scenario())
    assert operations.read_snapshot(stores[0]).rules is not None
    for s in stores:
        s.close()


def test_a_watcher_loop_survives_any_exception_and_counts_it(tmp_path: Path) -> None:
    store = open_store(None, str(tmp_path / "control.sqlite3"))
    operations.apply_rules_text(store, RULES, source="t", actor="t", reason="seed")
    watcher, _ = watcher_on(store)
    real_epoch, failures = store.epoch, [RuntimeError("boom"), RuntimeError("again")]

    def flaky_epoch() -> int:
        if failures:
            raise failures.pop()
        return real_epoch()

    async def scenario() -> None:
        await watcher.start()
        store.epoch = flaky_epoch  # type: ignore[method-assign]
        for _ in range(100):
            if not failures:
                break
            await asyncio.sleep(0.05)
        operations.kill(store, "warranties", actor="oncall", reason="INC-4")
        for _ in range(100):
            if "warranties" in watcher.snapshot.kills:
                break
            await asyncio.sleep(0.05)
        assert "warranties" in watcher.snapshot.kills
        assert watcher.dead_tasks() == []
        await watcher.stop()

    asyncio.run(scenario())
    text = watcher.metrics.render().decode()  # type: ignore[attr-defined]
    assert 'strangler_background_errors_total{task="watcher"} 2.0' in text
    store.close()


@pytest.mark.redis
def test_a_store_rewritten_to_the_same_epoch_is_read_again(redis_clean_url: str,
                                                           tmp_path: Path) -> None:
    """Before: a replica compared epochs only, so a store that lost its data and was written
    back up to the same epoch while the replica was away was never read again."""
    store = RedisControlStore(redis_clean_url)
    operations.apply_rules_text(store, RULES, source="t", actor="t", reason="seed")
    watcher, _ = watcher_on(store, cache=StateCache(tmp_path / "cache.json"))

    async def scenario() -> None:
        await watcher.refresh(force=True)
        before = watcher.snapshot
        assert before.kills == frozenset()
        old = store.identity()
        epoch = store.epoch()
        redis.Redis.from_url(redis_clean_url).flushdb()
        store.restore(RestoreState(StoreIdentity("elsewhere", time.time(), old.generation),
                                   store_rules := watcher.known.rules, (), ()))
        assert store_rules is not None
        operations.kill(store, "warranties", actor="oncall", reason="written while away")
        client = redis.Redis.from_url(redis_clean_url)
        client.set("strangler:epoch", epoch)  # back up to the very epoch the replica saw
        client.close()
        await watcher.refresh()
        assert watcher.snapshot.kills == frozenset({"warranties"})

    asyncio.run(scenario())
    store.close()
