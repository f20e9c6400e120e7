"""Faults around the proxy: Redis slow, hung or restarted; control state too old; the core
unreachable; the QA override with no secret configured."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from control import operations as control
from control.store.redis_store import RedisControlStore
from proxy.config import ProxySettings
from proxy.main import UVICORN_OPTIONS, create_app
from tests.integration.conftest import RULES, TEST_DEFAULTS
from tests.support.backends import EchoBackend
from tests.support.faults import redis_process, stalling_proxy
from tests.support.servers import serve

STORE_TIMEOUT = 2.0  # RedisControlStore's socket timeout
IE = {"X-Checkout-Funnel": "warranties", "X-Country": "IE"}  # 100 % core
NONE = {"X-Checkout-Funnel": "unknown", "X-Country": "IE"}  # no funnel: DEFAULT legacy


def post_cart(url: str, headers: dict[str, str]) -> httpx.Response:
    session = {"X-Checkout-Session": f"unit-{uuid.uuid4().hex}"}
    return httpx.post(url + "/carts", headers={**headers, **session}, timeout=5)


def health(url: str) -> tuple[int, dict[str, Any]]:
    r = httpx.get(url + "/_strangler/healthz", timeout=5)
    return r.status_code, r.json()


def eventually(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within}s: {what}"
        time.sleep(0.05)


@dataclass
class RedisStack:
    url: str  # the proxy
    store: RedisControlStore  # direct to Redis, for the operator's writes


@contextmanager
def proxy_on(redis_url: str, direct_url: str, tmp: Path, **overrides: Any) -> Iterator[RedisStack]:
    store = RedisControlStore(direct_url)
    with ExitStack() as stack:
        core = stack.enter_context(serve(EchoBackend("core")))
        legacy = stack.enter_context(serve(EchoBackend("legacy")))
        settings = ProxySettings(core_url=core.url, legacy_url=legacy.url, redis_url=redis_url,
                                 db_path=str(tmp / "unused.sqlite3"), poll_interval=0.1,
                                 **{**TEST_DEFAULTS, **overrides})
        proxy = stack.enter_context(serve(create_app(settings), **UVICORN_OPTIONS))
        yield RedisStack(proxy.url, store)
    store.close()


def seed(store: RedisControlStore, kill_warranties: bool = False) -> None:
    control.apply_rules_text(store, RULES, source="test", actor="t", reason="seed")
    if kill_warranties:
        control.kill(store, "warranties", actor="t", reason="latched")


# -- Redis hung, then back -------------------------------------------------------------------

@pytest.mark.redis
def test_a_hung_redis_keeps_routing_on_the_last_state_and_recovers(tmp_path: Path) -> None:
    with redis_process(tmp_path, persistent=False) as server, \
            stalling_proxy(server.port) as tcp:
        seed(RedisControlStore(server.url), kill_warranties=True)
        with proxy_on(f"redis://127.0.0.1:{tcp.port}/0", server.url, tmp_path) as stack:
            eventually(lambda: health(stack.url)[0] == 200, 5, "healthy")
            tcp.stall()
            served = 0
            # served all along, until the watcher's read timed out (the store's own timeout,
            # STORE_TIMEOUT): the proof that the store was hung while they were answered
            while health(stack.url)[0] != 503:
                started = time.monotonic()
                killed, other = post_cart(stack.url, IE), post_cart(stack.url, NONE)
                # a request that waited for the hung store would take its whole timeout
                assert time.monotonic() - started < STORE_TIMEOUT
                assert killed.headers["x-checkout-decision"].startswith("KILL_SWITCH")
                assert killed.headers["x-checkout-backend"] == "legacy"
                assert other.status_code == 201
                served += 1
                assert served < 200, "the hung store was never noticed"
            assert served >= 2
            status, state = health(stack.url)
            assert status == 503 and state["status"] == "degraded"
            assert state["kill_switches"] == ["warranties"]
            tcp.resume()
            eventually(lambda: health(stack.url)[0] == 200, 5, "healthy again")
            control.unkill(stack.store, "warranties", actor="t", reason="over")
            eventually(lambda: post_cart(stack.url, IE).headers["x-checkout-backend"] == "core",
                       3, "the unkill to arrive")


@pytest.mark.redis
def test_state_older_than_max_state_age_sends_everything_to_legacy_with_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    with redis_process(tmp_path, persistent=False) as server, \
            stalling_proxy(server.port) as tcp:
        seed(RedisControlStore(server.url))
        with proxy_on(f"redis://127.0.0.1:{tcp.port}/0", server.url, tmp_path,
                      max_state_age=1.0) as stack:
            assert post_cart(stack.url, IE).headers["x-checkout-backend"] == "core"
            tcp.stall()
            eventually(lambda: post_cart(stack.url, IE).headers["x-checkout-backend"] ==
                       "legacy", 10, "the state to be older than max_state_age")
            r = post_cart(stack.url, IE)
            assert r.headers["x-checkout-backend"] == "legacy"
            assert r.headers["x-checkout-decision"] == "ERROR; rules=1"
            status, state = health(stack.url)
            assert status == 503 and state["status"] == "degraded"
            assert "every request goes to legacy" in caplog.text
            tcp.resume()
            eventually(lambda: post_cart(stack.url, IE).headers["x-checkout-decision"]
                       .startswith("RULE; rule=ie-all"), 5, "routing by the rules again")


# -- Redis restarted -------------------------------------------------------------------------

@pytest.mark.redis
def test_a_restarted_redis_keeps_the_kill_switch_and_a_new_one_reaches_the_proxy(
    tmp_path: Path,
) -> None:
    with redis_process(tmp_path, persistent=True) as server:
        seed(RedisControlStore(server.url), kill_warranties=True)
        with proxy_on(server.url, server.url, tmp_path) as stack:
            assert post_cart(stack.url, NONE).headers["x-checkout-decision"].startswith(
                "DEFAULT")
            server.kill()
            eventually(lambda: health(stack.url)[0] == 503, 5, "degraded")
            assert post_cart(stack.url, IE).headers["x-checkout-decision"].startswith(
                "KILL_SWITCH")
            server.start()  # same port, same append-only file
            eventually(lambda: health(stack.url)[0] == 200, 5, "healthy again")
            assert post_cart(stack.url, IE).headers["x-checkout-decision"].startswith(
                "KILL_SWITCH")  # it survived the restart
            fresh = RedisControlStore(server.url)
            control.kill(fresh, None, actor="oncall", reason="after the restart")
            fresh.close()
            eventually(lambda: post_cart(stack.url, NONE).headers["x-checkout-decision"]
                       .startswith("KILL_SWITCH"), 2, "the new global kill switch")


@pytest.mark.redis
def test_a_redis_that_comes_back_empty_gets_the_kill_switch_back(tmp_path: Path) -> None:
    """Before: the proxy routed by an empty store (DEFAULT; rules=none) and the kill switch
    was gone for good. Now the last known state, kill switch included, is restored."""
    with redis_process(tmp_path, persistent=False) as server:
        seed(RedisControlStore(server.url), kill_warranties=True)
        with proxy_on(server.url, server.url, tmp_path) as stack:
            server.kill()
            eventually(lambda: health(stack.url)[0] == 503, 5, "degraded")
            server.start()  # no persistence: rules and kill switches are gone
            eventually(lambda: health(stack.url)[0] == 200, 5, "healthy again")
            r = post_cart(stack.url, IE)
            assert r.headers["x-checkout-backend"] == "legacy"
            assert r.headers["x-checkout-decision"] == "KILL_SWITCH; rules=1"
            restored = RedisControlStore(server.url)
            assert set(restored.kill_switches()) == {"warranties"}
            assert restored.audit_log(1)[0].action == "store.restore"
            restored.close()


# -- the core unreachable ----------------------------------------------------------------

def metric_lines(url: str, name: str) -> list[str]:
    return [line for line in httpx.get(url + "/metrics").text.splitlines()
            if line.startswith(name + "{")]


def test_rule_traffic_fails_over_and_the_error_counts_against_the_core(make_stack: Any) -> None:
    stack = make_stack(core_up=False)
    r = post_cart(stack.url, IE)
    assert r.status_code == 201 and r.headers["x-checkout-decision"].startswith("FAILOVER")
    errors = metric_lines(stack.url, "strangler_upstream_errors_total")
    assert errors == [
        'strangler_upstream_errors_total{backend="core",funnel="warranties",kind="connect"} 1.0'
    ]


def test_a_request_naming_a_core_id_is_never_failed_over_to_legacy(make_stack: Any) -> None:
    stack = make_stack(core_up=False)
    r = httpx.post(stack.url + "/checkouts/co_chk_1/orders", headers={
        **IE, "Idempotency-Key": "k1"}, json={"payment": {"method": "card", "token": "tok_visa"}})
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["x-checkout-backend"] == "core"
    assert r.headers["x-checkout-decision"].startswith("OWNER")
    assert stack.legacy_app.requests == []  # legacy cannot serve a core id: never sent there
    assert metric_lines(stack.url, "strangler_upstream_errors_total") == [
        'strangler_upstream_errors_total{backend="core",funnel="warranties",kind="connect"} 1.0'
    ]


# -- the QA override without a secret --------------------------------------------------------

def test_without_a_configured_secret_the_qa_override_is_ignored_and_stripped(
    make_stack: Any,
) -> None:
    stack = make_stack()
    r = httpx.post(stack.url + "/carts", headers={
        "X-Checkout-Funnel": "warranties", "X-Country": "DE",
        "X-Checkout-Force": "core", "X-Checkout-Force-Token": ""})
    assert r.headers["x-checkout-backend"] == "legacy"
    assert r.headers["x-checkout-decision"].startswith("RULE; rule=de-none")
    names = [name for name, _ in r.json()["headers"]]
    assert "x-checkout-force" not in names and "x-checkout-force-token" not in names
