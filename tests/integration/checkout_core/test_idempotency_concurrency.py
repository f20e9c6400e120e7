"""Many threads, one Idempotency-Key, a real server: one order, one charge, one answer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from checkout_core.adapters.fake_gateway import FakeGateway, FakeGatewayConfig
from checkout_core.main import create_app
from checkout_core.service.ports import ChargeRequest, PaymentResult
from tests.support.servers import serve

from .conftest import SettingsFactory
from .helpers import http_checkout, payment_body

THREADS = 16


def hammer(url: str, send: Callable[[httpx.Client, int], httpx.Response]) -> list[httpx.Response]:
    barrier = threading.Barrier(THREADS)

    def one(i: int) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=20) as client:
            barrier.wait(5)
            return send(client, i)

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(one, range(THREADS)))


def app_with_naive_gateway(make_settings: SettingsFactory) -> tuple[object, FakeGateway]:
    gateway = FakeGateway(FakeGatewayConfig(latency_seconds=0.05, honours_idempotency_keys=False))
    return create_app(make_settings(), gateway=gateway), gateway


def test_concurrent_duplicates_get_the_same_response_and_one_charge(
    make_settings: SettingsFactory,
) -> None:
    app, gateway = app_with_naive_gateway(make_settings)
    with serve(app) as server, httpx.Client(base_url=server.url) as client:
        url = f"/checkouts/{http_checkout(client)}/orders"
        responses = hammer(server.url, lambda c, i: c.post(
            url, json=payment_body(), headers={"Idempotency-Key": "same-key"}))
    assert {r.status_code for r in responses} == {201}
    assert len({r.text for r in responses}) == 1
    assert len(gateway.charges) == 1
    orders = app.state.core.db.transaction(  # type: ignore[attr-defined]
        lambda conn: conn.execute("SELECT count(*) FROM orders").fetchone()[0], write=False)
    assert orders == 1


def test_concurrent_different_bodies_with_one_key_get_one_order_and_409s(
    make_settings: SettingsFactory,
) -> None:
    app, gateway = app_with_naive_gateway(make_settings)
    with serve(app) as server, httpx.Client(base_url=server.url) as client:
        url = f"/checkouts/{http_checkout(client)}/orders"
        responses = hammer(server.url, lambda c, i: c.post(
            url, json=payment_body(f"tok_{i % 2}"), headers={"Idempotency-Key": "k"}))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == THREADS // 2 and statuses.count(409) == THREADS // 2
    assert len({r.text for r in responses if r.status_code == 201}) == 1
    assert len(gateway.charges) == 1


def test_concurrent_keys_on_one_checkout_charge_once(make_settings: SettingsFactory) -> None:
    app, gateway = app_with_naive_gateway(make_settings)
    with serve(app) as server, httpx.Client(base_url=server.url) as client:
        url = f"/checkouts/{http_checkout(client)}/orders"
        responses = hammer(server.url, lambda c, i: c.post(
            url, json=payment_body(), headers={"Idempotency-Key": f"key-{i}"}))
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 1
    assert set(statuses) <= {201, 409}
    assert len(gateway.charges) == 1




def test_a_duplicate_held_past_the_wait_gets_a_retryable_409_before_the_proxy_gives_up(
    make_settings: SettingsFactory,
) -> None:
    # the first request's charge outlasts the duplicate's wait: the duplicate must get an
    # answer it can act on (409 + Retry-After), not hang until the proxy's 504
    started, released = threading.Event(), threading.Event()

    class HeldGateway(FakeGateway):
        async def authorize(self, request: ChargeRequest) -> PaymentResult:
            started.set()
            while not released.is_set():  # the charge runs until the test lets it finish
                await asyncio.sleep(0.01)
            return await super().authorize(request)

    gateway = HeldGateway(FakeGatewayConfig(latency_seconds=0, honours_idempotency_keys=False))
    app = create_app(make_settings(idempotency_wait_seconds=0.2, payment_call_timeout_ms=60_000),
                     gateway=gateway)
    with serve(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        url = f"/checkouts/{http_checkout(client)}/orders"
        headers = {"Idempotency-Key": "slow-key"}
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(client.post, url, json=payment_body(), headers=headers)
            try:
                assert started.wait(20), "the first charge never began"
                duplicate = client.post(url, json=payment_body(), headers=headers)
            finally:
                released.set()
            assert duplicate.status_code == 409
            assert duplicate.json()["type"].endswith("idempotency-request-in-progress")
            assert duplicate.headers["retry-after"] == "1"
            assert first.result().status_code == 201
        replay = client.post(url, json=payment_body(), headers=headers)
    assert replay.status_code == 201 and replay.json() == first.result().json()
    assert len(gateway.charges) == 1


def test_the_default_wait_for_a_duplicate_is_under_the_proxy_read_timeout() -> None:
    from checkout_core.config import CoreSettings
    from proxy.config import ProxySettings

    assert CoreSettings().idempotency_wait_seconds < ProxySettings().core_read_timeout
