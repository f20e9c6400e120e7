"""/livez and /readyz on a running proxy: ready once it has a routing state, still ready
(while /_strangler/healthz says degraded) when the control store is unreachable, not ready
before the first state is known or while it drains. Real servers, a real Redis."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from control import operations
from control.rules_loader import rules_digest
from control.store import AuditEntry, open_store
from control.store.redis_store import RedisControlStore
from proxy.app import ProxyApp
from proxy.config import ProxySettings
from proxy.main import UVICORN_OPTIONS, create_app
from tests.integration.conftest import RULES, TEST_DEFAULTS
from tests.support.backends import EchoBackend, HeldBackend
from tests.support.processes import wait_until
from tests.support.redis_server import own_redis_server
from tests.support.servers import PortReservation, ServerThread, serve

IE = {"X-Checkout-Funnel": "warranties", "X-Country": "IE"}  # 100 % core by RULES


def status(url: str, path: str) -> int:
    return httpx.get(url + path, timeout=5).status_code


def decision(url: str, headers: dict[str, str]) -> str:
    session = {"X-Checkout-Session": f"unit-{uuid.uuid4().hex}"}
    r = httpx.post(url + "/carts", headers={**headers, **session}, timeout=5)
    assert r.status_code == 201, r.text
    return r.headers["x-checkout-decision"]


@contextmanager
def proxy(tmp: Path, **settings: Any) -> Iterator[tuple[ServerThread, ProxyApp]]:
    """A proxy on echo backends, with a state cache of its own under `tmp`."""
    with ExitStack() as stack:
        core = stack.enter_context(serve(EchoBackend("core")))
        legacy = stack.enter_context(serve(EchoBackend("legacy")))
        config = {"db_path": str(tmp / "control.sqlite3"),
                  "state_cache": str(tmp / "last-known-state.json"), **settings}
        app = create_app(ProxySettings(
            core_url=core.url, legacy_url=legacy.url, poll_interval=0.1,
            forward_path_prefixes=[], **{**TEST_DEFAULTS, **config}))
        assert isinstance(app, ProxyApp)
        server = stack.enter_context(serve(app, **UVICORN_OPTIONS))
        yield server, app


@pytest.mark.redis
def test_an_unreachable_store_leaves_every_replica_ready_and_healthz_degraded(
    tmp_path: Path,
) -> None:
    """Readiness never follows the control store: with Redis gone, each replica keeps
    routing on its last known state (the kill switch holds), /readyz stays 200 even once
    the state is older than max_state_age, while /_strangler/healthz says degraded."""
    with own_redis_server() as (url, redis_proc):
        store = RedisControlStore(url)
        operations.apply_rules_text(store, RULES, source="t", actor="t", reason="seed")
        operations.kill(store, "warranties", actor="oncall", reason="INC-1")
        store.close()
        with proxy(tmp_path / "a", redis_url=url, max_state_age=1.0) as (a, _), \
                proxy(tmp_path / "b", redis_url=url, max_state_age=1.0) as (b, _):
            for replica in (a, b):
                assert status(replica.url, "/readyz") == 200
                assert status(replica.url, "/_strangler/healthz") == 200
            redis_proc.kill()
            redis_proc.wait(5)
            for replica in (a, b):
                wait_until(lambda r=replica: status(r.url, "/_strangler/healthz") == 503,
                           15, "healthz to report the lost store")
                wait_until(lambda r=replica: httpx.get(r.url + "/_strangler/state").json()[
                    "state_age_seconds"] > 1.0, 15, "the state to grow stale")
            for replica in (a, b):
                assert httpx.get(replica.url + "/_strangler/state").json()["status"] == (
                    "degraded")
                for _ in range(5):
                    ready = httpx.get(replica.url + "/readyz")
                    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
                    assert status(replica.url, "/livez") == 200
                    assert decision(replica.url, IE).startswith("KILL_SWITCH")


@pytest.mark.redis
def test_not_ready_before_the_first_state_then_ready_once_the_store_answers(
    tmp_path: Path,
) -> None:
    """A replica that starts while its Redis is down, with no last known state, routes
    everything to legacy and is not ready; it becomes ready when Redis answers."""
    reservation = PortReservation()  # nothing listens there yet: connections are refused
    url = f"redis://127.0.0.1:{reservation.port}/0"
    try:
        with proxy(tmp_path, redis_url=url) as (server, app):
            ready = httpx.get(server.url + "/readyz")
            assert ready.status_code == 503
            assert ready.headers["content-type"] == "application/problem+json"
            assert ready.json()["type"].endswith("/not-ready")
            assert "no routing state yet" in ready.json()["detail"]
            assert status(server.url, "/livez") == 200
            assert status(server.url, "/_strangler/healthz") == 503
            assert decision(server.url, IE).startswith("DEFAULT; rules=none")
            with own_redis_server(reservation.port) as (redis_url, _):
                assert redis_url == url
                store = RedisControlStore(url)
                operations.apply_rules_text(store, RULES, source="t", actor="t",
                                            reason="seed")
                store.close()
                # the watcher may read the empty store before the seed (that is ready too:
                # a deliberate all-legacy state); wait for the seeded rules, then ready
                wait_until(lambda: app.rt.snapshot.rules is not None, 15,
                           "the seeded rules once the store answers")
                assert status(server.url, "/readyz") == 200
                assert decision(server.url, IE).startswith("RULE")
    finally:
        reservation.close()


def test_a_store_with_no_rules_is_ready_everything_to_legacy(tmp_path: Path) -> None:
    """No rules applied is a deliberate state: all legacy, and ready."""
    with proxy(tmp_path) as (server, app):
        assert app.rt.snapshot.rules is None
        assert httpx.get(server.url + "/readyz").json() == {"status": "ready"}
        assert decision(server.url, IE).startswith("DEFAULT; rules=none")


def test_stored_rules_this_proxy_cannot_read_are_not_ready(tmp_path: Path) -> None:
    """Rules in the store that do not parse (written by another version, say), with no
    good rules to keep: not ready, so a rolling update stops at the first new pod."""
    store = open_store(None, str(tmp_path / "control.sqlite3"))
    text = RULES.replace("schema: 1", "schema: 99")
    audit = AuditEntry(time.time(), "t", "rules.apply", "t", "from the future", {})
    store.apply_rules(text, rules_digest(text), expected_version=None, actor="t",
                      reason="from the future", source="t", audit=audit)
    store.close()
    with proxy(tmp_path) as (server, _):
        ready = httpx.get(server.url + "/readyz")
        assert ready.status_code == 503
        assert "no valid rules to route with" in ready.json()["detail"]
        assert status(server.url, "/livez") == 200


async def asgi_status(app: ProxyApp, path: str) -> tuple[int, dict[str, Any]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
        r = await client.get(path)
    return r.status_code, r.json()


def test_not_ready_while_draining(tmp_path: Path) -> None:
    """Once the server begins to shut down (SIGTERM), /readyz answers 503 "draining" while
    the request in flight completes."""
    backend = HeldBackend()
    result: dict[str, int] = {}
    with serve(backend) as upstream:
        app = create_app(ProxySettings(
            core_url=upstream.url, legacy_url=upstream.url, poll_interval=0.1,
            db_path=str(tmp_path / "control.sqlite3"), state_cache="",
            forward_path_prefixes=[], **TEST_DEFAULTS))
        assert isinstance(app, ProxyApp)
        server = ServerThread(app, **UVICORN_OPTIONS).start()
        try:
            assert asyncio.run(asgi_status(app, "/readyz")) == (200, {"status": "ready"})
            client = threading.Thread(target=lambda: result.update(
                status=httpx.get(server.url + "/carts", timeout=60).status_code))
            client.start()
            assert backend.started.wait(10)
            server.server.should_exit = True  # what uvicorn's SIGTERM handler does
            wait_until(lambda: app.draining, 10, "the drain to begin")
            code, body = asyncio.run(asgi_status(app, "/readyz"))
            assert code == 503 and body["detail"] == "draining: the server is shutting down"
            assert asyncio.run(asgi_status(app, "/livez")) == (200, {"status": "ok"})
        finally:
            backend.release.set()
            server.stop()
    client.join(10)
    assert result == {"status": 200}
