"""Several proxy replicas sharing state through a real Redis."""

from __future__ import annotations

import time
import uuid
from contextlib import ExitStack
from decimal import Decimal

import httpx
import pytest

from control import operations as control
from control.store.redis_store import RedisControlStore
from proxy.app import ProxyApp
from proxy.config import ProxySettings
from proxy.main import UVICORN_OPTIONS, create_app
from proxy.runtime import ProxyRuntime
from proxy.sticky_redis import RedisSticky
from tests.integration.conftest import RULES, TEST_DEFAULTS
from tests.support.backends import EchoBackend
from tests.support.processes import wait_until
from tests.support.redis_server import own_redis_server
from tests.support.servers import serve

IE = {"X-Checkout-Funnel": "warranties", "X-Country": "IE"}
FR = {"X-Checkout-Funnel": "warranties", "X-Country": "FR"}

pytestmark = pytest.mark.redis


@pytest.fixture
def replicas(redis_clean_url, tmp_path):
    store = RedisControlStore(redis_clean_url)
    control.apply_rules_text(store, RULES, source="test", actor="t", reason="seed")
    with ExitStack() as stack:
        core = stack.enter_context(serve(EchoBackend("core")))
        legacy = stack.enter_context(serve(EchoBackend("legacy")))
        urls = []
        for i in range(3):
            settings = ProxySettings(
                core_url=core.url, legacy_url=legacy.url, redis_url=redis_clean_url,
                db_path=str(tmp_path / f"unused-{i}.sqlite3"), poll_interval=1.0,
                **TEST_DEFAULTS,
            )
            # a generous bound on sticky reads: stickiness across replicas is the subject
            # here, not the 50 ms bound (which a busy machine overruns)
            sticky = RedisSticky(redis_clean_url, settings.sticky_max_units, timeout=2.0)
            app = ProxyApp(ProxyRuntime(settings, sticky=sticky))
            urls.append(stack.enter_context(serve(app, **UVICORN_OPTIONS)).url)
        yield store, urls
    store.close()


def backend(url: str, headers: dict[str, str], unit: str | None = None) -> httpx.Response:
    unit = unit or f"unit-{uuid.uuid4().hex}"
    return httpx.post(url + "/carts", headers={**headers, "X-Checkout-Session": unit})


def test_kill_switch_reaches_every_replica_fast_through_pubsub(replicas):
    store, urls = replicas
    assert all(backend(u, IE).headers["x-checkout-backend"] == "core" for u in urls)
    control.kill(store, None, actor="oncall", reason="drill")
    started = time.monotonic()
    pending = set(urls)
    while pending:
        pending = {u for u in pending if backend(u, IE).headers["x-checkout-backend"] != "legacy"}
        assert time.monotonic() - started < 1.0, f"still routing to core: {pending}"
        time.sleep(0.01)
    # poll_interval is 1 s: only pub/sub can have been this fast (well under a poll)
    assert time.monotonic() - started < 0.9


def test_a_unit_in_flight_keeps_its_backend_on_every_replica(replicas):
    store, urls = replicas
    units = [f"unit-{i:06d}" for i in range(40)]
    first = {u: backend(urls[0], FR, u).headers["x-checkout-backend"] for u in units}
    in_core = [u for u, b in first.items() if b == "core"]
    assert in_core
    text, _ = control.ramp_text(RULES, "warranties", None, Decimal(0))
    control.apply_rules_text(store, text, source="t", actor="t", reason="ramp down")
    wait_until(lambda: httpx.get(urls[1] + "/_strangler/healthz").json()["rules_version"]
               == "2", 10, "the ramp to reach the replica")
    for unit in in_core:
        r = backend(urls[1], FR, unit)
        assert r.headers["x-checkout-backend"] == "core"
        assert r.headers["x-checkout-decision"].startswith("STICKY;")


def test_replicas_keep_routing_on_the_last_state_when_redis_dies(tmp_path):
    with own_redis_server() as (url, redis_proc):
        store = RedisControlStore(url)
        control.apply_rules_text(store, RULES, source="test", actor="t", reason="seed")
        control.kill(store, "warranties", actor="t", reason="latched")
        store.close()
        with serve(EchoBackend("core")) as core, serve(EchoBackend("legacy")) as legacy:
            settings = ProxySettings(core_url=core.url, legacy_url=legacy.url, redis_url=url,
                                     poll_interval=0.1, db_path=str(tmp_path / "x.sqlite3"),
                                     **TEST_DEFAULTS)
            with serve(create_app(settings), **UVICORN_OPTIONS) as proxy:
                assert backend(proxy.url, IE).headers["x-checkout-backend"] == "legacy"
                assert backend(proxy.url, {**IE, "X-Checkout-Funnel": "none"}).status_code == 201
                redis_proc.kill()
                redis_proc.wait(5)
                wait_until(lambda: httpx.get(proxy.url + "/_strangler/healthz").status_code
                           == 503, 10, "the proxy to notice")
                health = httpx.get(proxy.url + "/_strangler/healthz")
                assert health.status_code == 503 and health.json()["status"] == "degraded"
                r = backend(proxy.url, IE)
                assert r.headers["x-checkout-backend"] == "legacy"  # the kill switch holds
                assert r.headers["x-checkout-decision"].startswith("KILL_SWITCH")
                assert backend(proxy.url, FR).status_code == 201  # still serving
