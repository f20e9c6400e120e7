"""Fault injection of the legacy stub: latency, injected 500s, random declines, /_faults."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from legacy_stub.app import create_app
from legacy_stub.config import LegacySettings
from legacy_stub.faults import Sleep

PROBLEM = "https://checkout.example/problems/"
QUIET = {"latency_ms": 0, "latency_jitter_ms": 0, "error_rate": 0.0, "decline_rate": 0.0}
ADDRESS = {"name": "Ada", "line1": "Hauptstr. 1", "city": "Berlin", "postal_code": "10115",
           "country": "DE"}
VISA = {"payment": {"method": "card", "token": "tok_visa"}}
ClientFactory = Callable[..., httpx.AsyncClient]


class SleepRecorder:
    """A stand-in for asyncio.sleep that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
async def make_client() -> AsyncIterator[ClientFactory]:
    clients: list[httpx.AsyncClient] = []

    def make(sleep: Sleep | None = None, **settings: Any) -> httpx.AsyncClient:
        app = create_app(LegacySettings(**{**QUIET, **settings}), sleep=sleep)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                   base_url="http://legacy.test")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def _checkout(client: httpx.AsyncClient) -> str:
    cart = (await client.post("/carts", json={"country": "DE", "currency": "EUR"})).json()
    await client.post(f"/carts/{cart['id']}/items", json={"sku": "AC-CASE-6", "quantity": 1})
    body = {"email": "a@b.example", "shipping_address": ADDRESS}
    checkout = await client.post(f"/carts/{cart['id']}/checkout", json=body)
    assert checkout.status_code == 201, checkout.text
    return str(checkout.json()["id"])


def _assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["X-Backend-Name"] == "legacy"
    body: dict[str, Any] = response.json()
    assert (body["type"], body["status"]) == (PROBLEM + slug, status)
    return body


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/carts"), ("GET", "/carts/lg_cart_x"), ("POST", "/checkouts/lg_chk_x/orders"),
    ("GET", "/orders/lg_ord_x"), ("DELETE", "/carts/lg_cart_x/items/AC-CASE-6"),
])
async def test_error_rate_one_fails_every_contract_request(
    make_client: ClientFactory, method: str, path: str
) -> None:
    client = make_client(error_rate=1.0)
    response = await client.request(method, path, json={"country": "DE", "currency": "EUR"})
    body = _assert_problem(response, 500, "injected-fault")
    assert body["instance"] == path


@pytest.mark.parametrize("path", ["/healthz", "/_faults", "/openapi.yaml"])
async def test_injected_errors_spare_the_operational_routes(
    make_client: ClientFactory, path: str
) -> None:
    client = make_client(error_rate=1.0)
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["X-Backend-Name"] == "legacy"


async def test_decline_rate_one_declines_approved_tokens(make_client: ClientFactory) -> None:
    client = make_client(decline_rate=1.0)
    checkout_id = await _checkout(client)
    url = f"/checkouts/{checkout_id}/orders"
    declined = await client.post(url, json=VISA, headers={"Idempotency-Key": "k1"})
    _assert_problem(declined, 402, "payment-declined")
    await client.put("/_faults", json={"decline_rate": 0.0})
    placed = await client.post(url, json=VISA, headers={"Idempotency-Key": "k2"})
    assert placed.status_code == 201, placed.text


async def test_faults_change_at_runtime(make_client: ClientFactory) -> None:
    client = make_client()
    changed = await client.put("/_faults", json={"error_rate": 1, "latency_jitter_ms": 5})
    expected = {**QUIET, "error_rate": 1.0, "latency_jitter_ms": 5}
    assert (changed.status_code, changed.json()) == (200, expected)
    assert (await client.get("/_faults")).json() == expected
    _assert_problem(await client.post("/carts", json={}), 500, "injected-fault")
    await client.put("/_faults", json={"error_rate": 0.0})
    cart = await client.post("/carts", json={"country": "DE", "currency": "EUR"})
    assert cart.status_code == 201


@pytest.mark.parametrize(("body", "field"), [
    ({"error_rate": 1.5}, "error_rate"),
    ({"error_rate": -0.1}, "error_rate"),
    ({"error_rate": None}, "error_rate"),
    ({"error_rate": "0.5"}, "error_rate"),
    ({"decline_rate": 2}, "decline_rate"),
    ({"latency_ms": -1}, "latency_ms"),
    ({"latency_ms": "100"}, "latency_ms"),
    ({"latency_ms": 60_001}, "latency_ms"),
    ({"latency_jitter_ms": 1.5}, "latency_jitter_ms"),
    ({"latency_jitter_ms": True}, "latency_jitter_ms"),
    ({"error_rat": 0.5}, "error_rat"),
])
async def test_bad_fault_settings_are_422_and_change_nothing(
    make_client: ClientFactory, body: dict[str, Any], field: str
) -> None:
    client = make_client()
    problem = _assert_problem(await client.put("/_faults", json=body), 422, "validation-error")
    assert field in [error["field"] for error in problem["errors"]]
    assert (await client.get("/_faults")).json() == QUIET


@pytest.mark.parametrize("content", [b"{", b"", b"fast please"])
async def test_a_fault_body_that_is_not_json_is_400(
    make_client: ClientFactory, content: bytes
) -> None:
    client = make_client()
    _assert_problem(await client.put("/_faults", content=content), 400, "malformed-json")


async def test_a_fault_body_that_is_not_an_object_is_422(make_client: ClientFactory) -> None:
    client = make_client()
    problem = _assert_problem(await client.put("/_faults", json=[1]), 422, "validation-error")
    assert problem["errors"][0]["field"] == "body"


async def test_latency_applies_to_contract_routes_only(make_client: ClientFactory) -> None:
    sleep = SleepRecorder()
    client = make_client(sleep=sleep, latency_ms=200)
    for path in ("/healthz", "/_faults", "/openapi.yaml"):
        await client.get(path)
    assert sleep.delays == []
    await client.post("/carts", json={"country": "DE", "currency": "EUR"})
    assert sleep.delays == [pytest.approx(0.2)]


async def test_jitter_adds_at_most_its_own_amount(make_client: ClientFactory) -> None:
    sleep = SleepRecorder()
    client = make_client(sleep=sleep, latency_ms=100, latency_jitter_ms=50, seed=3)
    for _ in range(30):
        await client.get("/carts/lg_cart_missing")
    assert len(sleep.delays) == 30
    assert all(0.1 <= delay <= 0.15 for delay in sleep.delays)
    assert len(set(sleep.delays)) > 1


async def test_latency_really_delays_the_response(make_client: ClientFactory) -> None:
    client = make_client(latency_ms=150)
    started = time.monotonic()
    response = await client.post("/carts", json={"country": "DE", "currency": "EUR"})
    assert response.status_code == 201
    assert time.monotonic() - started >= 0.15


async def test_a_seed_makes_the_faults_reproducible(make_client: ClientFactory) -> None:
    async def statuses(client: httpx.AsyncClient) -> list[int]:
        return [(await client.get("/carts/lg_cart_missing")).status_code for _ in range(40)]

    first = await statuses(make_client(error_rate=0.5, seed=7))
    second = await statuses(make_client(error_rate=0.5, seed=7))
    assert first == second
    assert set(first) == {404, 500}


def test_settings_come_from_legacy_stub_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEGACY_STUB_LATENCY_MS", "5")
    monkeypatch.setenv("LEGACY_STUB_ERROR_RATE", "0.25")
    monkeypatch.setenv("LEGACY_STUB_SEED", "42")
    settings = LegacySettings()
    assert (settings.latency_ms, settings.error_rate, settings.seed) == (5, 0.25, 42)
    with pytest.raises(ValidationError):
        settings.latency_ms = 1


def test_the_defaults_describe_a_slow_monolith(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LATENCY_MS", "LATENCY_JITTER_MS", "ERROR_RATE", "DECLINE_RATE", "SEED"):
        monkeypatch.delenv(f"LEGACY_STUB_{name}", raising=False)
    settings = LegacySettings()
    assert (settings.latency_ms, settings.latency_jitter_ms) == (250, 100)
    assert (settings.error_rate, settings.decline_rate, settings.seed) == (0.0, 0.02, None)


@pytest.mark.parametrize("variable", ["LEGACY_STUB_ERROR_RATE", "LEGACY_STUB_DECLINE_RATE"])
def test_rates_outside_0_to_1_are_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "1.5")
    with pytest.raises(ValidationError):
        LegacySettings()
