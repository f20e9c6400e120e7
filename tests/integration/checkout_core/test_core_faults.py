"""Fault drills on a running core (`/_faults`), on real servers, and `/_faults` behind the proxy."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from checkout_core.config import CoreSettings
from checkout_core.main import create_app
from proxy.config import ProxySettings
from proxy.main import UVICORN_OPTIONS
from proxy.main import create_app as create_proxy
from tests.support.backends import EchoBackend
from tests.support.servers import serve

from .conftest import FAST, SettingsFactory
from .helpers import http_checkout, payment_body, wait_until

PROBLEM = "application/problem+json"
QUIET = {"latency_ms": 0, "latency_jitter_ms": 0, "error_rate": 0.0, "decline_rate": 0.0,
         "unavailable_for_s": 0.0, "pricing_drift": None}
CoreFactory = Callable[..., httpx.Client]


@pytest.fixture
def make_core(make_settings: SettingsFactory) -> Iterator[CoreFactory]:
    """A client of a fresh core on a real server; keyword arguments override its settings."""
    with ExitStack() as stack:
        def make(**overrides: Any) -> httpx.Client:
            server = stack.enter_context(serve(create_app(make_settings(**overrides))))
            return stack.enter_context(httpx.Client(base_url=server.url, timeout=10))

        yield make


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.headers["x-backend-name"] == "core"
    body: dict[str, Any] = response.json()
    assert (body["type"], body["status"]) == (f"https://checkout.example/problems/{slug}", status)
    assert body["instance"] == response.request.url.path
    return body


def put_faults(client: httpx.Client, **faults: Any) -> dict[str, Any]:
    response = client.put("/_faults", json=faults)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def new_cart(client: httpx.Client) -> httpx.Response:
    return client.post("/carts", json={"country": "DE", "currency": "EUR"})


# --- GET and PUT --------------------------------------------------------------------------


def test_the_faults_start_from_the_settings(make_core: CoreFactory, tmp_path: Path) -> None:
    assert make_core().get("/_faults").json() == QUIET
    client = make_core(db_path=tmp_path / "other.sqlite3", fault_latency_ms=5,
                       fault_latency_jitter_ms=2, gateway_decline_rate=0.25)
    assert client.get("/_faults").json() == {**QUIET, "latency_ms": 5, "latency_jitter_ms": 2,
                                             "decline_rate": 0.25}


def test_put_replaces_the_faults_whole_and_get_shows_them(make_core: CoreFactory) -> None:
    client = make_core()
    faults = {"latency_ms": 20, "latency_jitter_ms": 5, "error_rate": 0.25,
              "decline_rate": 0.5, "unavailable_for_s": 0.0,
              "pricing_drift": {"country": "DE", "kind": "tax_round_down"}}
    assert put_faults(client, **faults) == faults
    assert client.get("/_faults").json() == faults
    assert put_faults(client, error_rate=1) == {**QUIET, "error_rate": 1.0}
    assert put_faults(client) == QUIET
    assert client.get("/_faults").json() == QUIET


# --- what the faults do -------------------------------------------------------------------


CONTRACT_REQUESTS = [
    ("POST", "/carts"), ("GET", "/carts/co_cart_x"), ("POST", "/carts/co_cart_x/items"),
    ("PATCH", "/carts/co_cart_x/items/HW-PHONE-6"), ("DELETE", "/carts/co_cart_x/items/X"),
    ("POST", "/carts/co_cart_x/checkout"), ("POST", "/checkouts/co_chk_x/orders"),
    ("GET", "/orders/co_ord_x"),
]


def test_injected_errors_fail_the_contract_routes_but_not_the_ops_routes(
    make_core: CoreFactory,
) -> None:
    client = make_core()
    put_faults(client, error_rate=1.0)
    for method, path in CONTRACT_REQUESTS:
        response = client.request(method, path, json={"country": "DE", "currency": "EUR"})
        assert_problem(response, 500, "injected-fault")
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.yaml", "/_faults"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["x-backend-name"] == "core"
    put_faults(client)
    assert new_cart(client).status_code == 201


def test_latency_delays_the_contract_requests(make_core: CoreFactory) -> None:
    client = make_core()
    put_faults(client, latency_ms=150, latency_jitter_ms=50)
    for _ in range(3):
        started = time.monotonic()
        assert new_cart(client).status_code == 201
        assert time.monotonic() - started >= 0.15


def test_declines_at_rate_one_refuse_every_order_until_lifted(make_core: CoreFactory) -> None:
    client = make_core()
    checkout_id = http_checkout(client)
    url = f"/checkouts/{checkout_id}/orders"
    put_faults(client, decline_rate=1.0)
    for key in ("k1", "k2"):
        declined = client.post(url, json=payment_body(), headers={"Idempotency-Key": key})
        assert_problem(declined, 402, "payment-declined")
    put_faults(client)
    placed = client.post(url, json=payment_body(), headers={"Idempotency-Key": "k3"})
    assert placed.status_code == 201, placed.text


def test_the_unavailable_window_answers_503_then_recovers(make_core: CoreFactory) -> None:
    client = make_core()
    started = time.monotonic()
    shown = put_faults(client, unavailable_for_s=1.0)
    assert 0 < shown["unavailable_for_s"] <= 1.0
    for response in (new_cart(client), client.get("/readyz")):
        assert_problem(response, 503, "injected-unavailable")
        assert int(response.headers["retry-after"]) >= 1
    assert client.get("/healthz").status_code == 200
    wait_until(lambda: new_cart(client).status_code == 201, timeout=10,
               message="the core to be available again")
    assert time.monotonic() - started >= 1.0
    assert client.get("/readyz").status_code == 200
    assert client.get("/_faults").json() == QUIET


def test_a_put_ends_the_unavailable_window_early(make_core: CoreFactory) -> None:
    client = make_core()
    put_faults(client, unavailable_for_s=3600)
    response = new_cart(client)
    assert_problem(response, 503, "injected-unavailable")
    assert response.headers["retry-after"] == "3600"
    put_faults(client)
    assert new_cart(client).status_code == 201


# --- bad input ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quiet_core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """One core for the bad-input tables: a refused PUT changes nothing."""
    settings = CoreSettings(db_path=tmp_path_factory.mktemp("faults") / "core.sqlite3", **FAST)
    with serve(create_app(settings)) as server, \
            httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


@pytest.mark.parametrize(("body", "field"), [
    ({"error_rate": 1.5}, "error_rate"),
    ({"error_rate": "0.5"}, "error_rate"),
    ({"decline_rate": True}, "decline_rate"),
    ({"latency_ms": -1}, "latency_ms"),
    ({"latency_jitter_ms": 2.5}, "latency_jitter_ms"),
    ({"unavailable_for_s": 3601}, "unavailable_for_s"),
    ({"error_rate": 1.0, "eror_rate": 1.0}, "eror_rate"),
    ([1], "body"),
])
def test_bad_faults_are_422_and_change_nothing(
    quiet_core: httpx.Client, body: Any, field: str
) -> None:
    problem = assert_problem(quiet_core.put("/_faults", json=body), 422, "validation-error")
    assert field in [error["field"] for error in problem["errors"]]
    assert quiet_core.get("/_faults").json() == QUIET


def test_a_fault_body_that_is_not_json_is_400(quiet_core: httpx.Client) -> None:
    assert_problem(quiet_core.put("/_faults", content=b"{"), 400, "malformed-json")
    assert quiet_core.get("/_faults").json() == QUIET


def test_faults_are_only_read_and_replaced(quiet_core: httpx.Client) -> None:
    assert_problem(quiet_core.post("/_faults", json={}), 405, "method-not-allowed")


# --- behind the proxy ---------------------------------------------------------------------


ALL_TO_CORE = """\
schema: 1
funnels:
  - name: warranties
    match: {header: warranties, path_prefix: /warranties}
    salt: w1
    rules:
      - {id: everyone, countries: '*', percent: 100}
"""
WARRANTIES_DE = {"X-Checkout-Funnel": "warranties", "X-Country": "DE"}


def test_the_proxy_never_forwards_faults(make_core: CoreFactory, tmp_path: Path) -> None:
    core = make_core()
    legacy = EchoBackend("legacy")
    rules = tmp_path / "rules.yaml"
    rules.write_text(ALL_TO_CORE)
    with serve(legacy) as legacy_server:
        settings = ProxySettings(
            core_url=str(core.base_url), legacy_url=legacy_server.url, rules_file=str(rules),
            db_path=str(tmp_path / "control.sqlite3"), state_cache="",
        )
        assert "/_faults" not in settings.forward_path_prefixes
        with serve(create_proxy(settings), **UVICORN_OPTIONS) as proxy, \
                httpx.Client(base_url=proxy.url, timeout=10) as client:
            cart = client.post("/warranties/carts", json={"country": "DE", "currency": "EUR"},
                               headers=WARRANTIES_DE)
            assert cart.status_code == 201, cart.text
            assert cart.headers["x-backend-name"] == "core"
            for path in ("/_faults", "/warranties/_faults"):
                for method in ("PUT", "GET"):
                    response = client.request(method, path, json={"error_rate": 1.0},
                                              headers=WARRANTIES_DE)
                    assert response.status_code == 404, (method, path)
                    assert response.headers["content-type"].startswith(PROBLEM)
    assert core.get("/_faults").json() == QUIET
    assert legacy.requests == []
