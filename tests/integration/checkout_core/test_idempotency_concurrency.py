"""Many threads, one Idempotency-Key, a real server: one order, one charge, one answer."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from checkout_core.adapters.fake_gateway import FakeGateway, FakeGatewayConfig
from checkout_core.main import create_app
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


