"""The fault switch, its request body, its settings and its middleware, without a server."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from checkout_core.adapters.fake_gateway import FakeGateway, FakeGatewayConfig
from checkout_core.bootstrap import build_fault_switch
from checkout_core.config import CoreSettings
from checkout_core.domain.errors import ValidationFailed
from checkout_core.domain.pricing import PricingDrift
from checkout_core.faults import Faults, FaultSwitch
from checkout_core.service.ports import ChargeRequest
from checkout_core.web import api, ops, schemas
from checkout_core.web.faults import FaultMiddleware, is_contract_path
from checkout_core.web.problems import BadRequest


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Dial:
    decline_rate = 0.0


class SleepRecorder:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def make_switch(clock: FakeClock | None = None, seed: int = 1, **faults: Any) -> FaultSwitch:
    return FaultSwitch(Faults(**faults), Dial(), random.Random(seed), clock or FakeClock())


# --- the switch ---------------------------------------------------------------------------


def test_the_switch_shows_the_faults_it_was_given() -> None:
    faults = Faults(latency_ms=5, latency_jitter_ms=2, error_rate=0.5, decline_rate=0.25)
    assert FaultSwitch(faults, Dial()).current() == faults


def test_replacing_the_faults_replaces_all_of_them() -> None:
    switch = make_switch(latency_ms=100, error_rate=1.0)
    assert switch.replace(Faults(decline_rate=0.5)) == Faults(decline_rate=0.5)
    assert switch.current() == Faults(decline_rate=0.5)
    assert switch.delay_seconds() == 0 and not switch.should_fail()


def test_the_decline_rate_is_the_dials_own() -> None:
    dial = Dial()
    switch = FaultSwitch(Faults(decline_rate=0.3), dial)
    assert dial.decline_rate == 0.3
    dial.decline_rate = 0.7
    assert switch.current().decline_rate == 0.7


def test_latency_is_the_least_delay_plus_up_to_the_jitter() -> None:
    switch = make_switch(latency_ms=100, latency_jitter_ms=50)
    delays = [switch.delay_seconds() for _ in range(50)]
    assert all(0.1 <= delay <= 0.15 for delay in delays)
    assert len(set(delays)) > 1
    assert make_switch(latency_ms=80).delay_seconds() == pytest.approx(0.08)


@pytest.mark.parametrize(("rate", "expected"), [(0.0, {False}), (1.0, {True})])
def test_error_rates_of_zero_and_one_are_certain(rate: float, expected: set[bool]) -> None:
    switch = make_switch(error_rate=rate)
    assert {switch.should_fail() for _ in range(200)} == expected


def test_a_seed_makes_the_draws_reproducible() -> None:
    def draws(seed: int) -> list[tuple[bool, float]]:
        switch = make_switch(seed=seed, error_rate=0.5, latency_jitter_ms=10)
        return [(switch.should_fail(), switch.delay_seconds()) for _ in range(40)]

    assert draws(7) == draws(7)
    assert {failed for failed, _ in draws(7)} == {True, False}


def test_the_unavailable_window_counts_down_from_the_replacement() -> None:
    clock = FakeClock()
    switch = make_switch(clock)
    assert switch.unavailable_for() == 0
    switch.replace(Faults(unavailable_for_s=10))
    clock.now += 4
    assert switch.unavailable_for() == pytest.approx(6)
    assert switch.current().unavailable_for_s == pytest.approx(6)
    clock.now += 6.5
    assert switch.unavailable_for() == 0
    assert switch.current() == Faults()


def test_the_switch_holds_the_pricing_drift_until_replaced() -> None:
    drift = PricingDrift("DE", "tax_round_down")
    switch = make_switch()
    assert switch.pricing_drift() is None
    assert switch.replace(Faults(pricing_drift=drift)).pricing_drift == drift
    assert switch.pricing_drift() == drift
    switch.replace(Faults(error_rate=0.5))
    assert switch.pricing_drift() is None


def test_replacing_the_faults_ends_the_window_early() -> None:
    switch = make_switch(unavailable_for_s=60)
    assert switch.unavailable_for() == 60
    switch.replace(Faults())
    assert switch.unavailable_for() == 0


# --- the fake gateway's dial --------------------------------------------------------------


async def test_the_switch_declines_through_the_fake_gateway() -> None:
    gateway = FakeGateway(FakeGatewayConfig(), random.Random(1))
    switch = FaultSwitch(Faults(), gateway)
    request = ChargeRequest("k1", 1000, "EUR", "tok_visa")
    assert (await gateway.authorize(request)).status == "authorized"
    switch.replace(Faults(decline_rate=1.0))
    declined = await gateway.authorize(ChargeRequest("k2", 1000, "EUR", "tok_visa"))
    assert (declined.status, declined.decline_reason) == ("declined", "insufficient_funds")


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_the_fake_gateway_refuses_a_decline_rate_that_is_not_a_probability(rate: float) -> None:
    gateway = FakeGateway()
    with pytest.raises(ValueError):
        gateway.decline_rate = rate
    assert gateway.decline_rate == 0.0


# --- settings -----------------------------------------------------------------------------


def test_the_faults_are_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LATENCY_MS", "LATENCY_JITTER_MS", "ERROR_RATE", "SEED"):
        monkeypatch.delenv(f"CHECKOUT_CORE_FAULT_{name}", raising=False)
    settings = CoreSettings()
    switch = build_fault_switch(settings, FakeGateway())
    assert switch.current() == Faults()
    assert settings.fault_seed is None


def test_the_startup_faults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHECKOUT_CORE_FAULT_LATENCY_MS", "40")
    monkeypatch.setenv("CHECKOUT_CORE_FAULT_LATENCY_JITTER_MS", "10")
    monkeypatch.setenv("CHECKOUT_CORE_FAULT_ERROR_RATE", "0.25")
    monkeypatch.setenv("CHECKOUT_CORE_FAULT_SEED", "3")
    monkeypatch.setenv("CHECKOUT_CORE_GATEWAY_DECLINE_RATE", "0.125")
    settings = CoreSettings()
    gateway = FakeGateway(FakeGatewayConfig(decline_rate=settings.gateway_decline_rate))
    assert build_fault_switch(settings, gateway).current() == Faults(
        latency_ms=40, latency_jitter_ms=10, error_rate=0.25, decline_rate=0.125)
    assert settings.fault_seed == 3


def test_a_startup_pricing_drift_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHECKOUT_CORE_FAULT_PRICING_DRIFT",
                       '{"country": "FR", "kind": "tax_rate_plus_100bp"}')
    switch = build_fault_switch(CoreSettings(), FakeGateway())
    assert switch.pricing_drift() == PricingDrift("FR", "tax_rate_plus_100bp")
    assert switch.current() == Faults(pricing_drift=PricingDrift("FR", "tax_rate_plus_100bp"))


@pytest.mark.parametrize(("variable", "value"), [
    ("CHECKOUT_CORE_FAULT_PRICING_DRIFT", '{"country": "XX", "kind": "tax_round_down"}'),
    ("CHECKOUT_CORE_FAULT_PRICING_DRIFT", '{"country": "DE", "kind": "tax_round_up"}'),
    ("CHECKOUT_CORE_FAULT_PRICING_DRIFT", "DE"),
    ("CHECKOUT_CORE_FAULT_ERROR_RATE", "1.5"),
    ("CHECKOUT_CORE_FAULT_ERROR_RATE", "nan"),
    ("CHECKOUT_CORE_FAULT_LATENCY_MS", "-1"),
    ("CHECKOUT_CORE_FAULT_LATENCY_JITTER_MS", "60001"),
])
def test_bad_startup_faults_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError):
        CoreSettings()


# --- the PUT body -------------------------------------------------------------------------


def parse_faults(body: bytes) -> Faults:
    parsed, _ = schemas.parse(schemas.FaultsIn, body)
    return parsed.to_faults()


@pytest.mark.parametrize(("body", "expected"), [
    (b"{}", Faults()),
    (b'{"error_rate": 1}', Faults(error_rate=1.0)),
    ((b'{"latency_ms": 60000, "latency_jitter_ms": 0, "error_rate": 0.5, "decline_rate": 0,'
      b' "unavailable_for_s": 2.5}'),
     Faults(latency_ms=60_000, error_rate=0.5, unavailable_for_s=2.5)),
    (b'{"unavailable_for_s": 3600}', Faults(unavailable_for_s=3600)),
    (b'{"pricing_drift": {"country": "DE", "kind": "tax_round_down"}}',
     Faults(pricing_drift=PricingDrift("DE", "tax_round_down"))),
    (b'{"pricing_drift": {"kind": "tax_rate_plus_100bp", "country": "US"}, "error_rate": 0.5}',
     Faults(error_rate=0.5, pricing_drift=PricingDrift("US", "tax_rate_plus_100bp"))),
    (b'{"pricing_drift": null}', Faults()),
])
def test_a_fault_body_names_the_whole_setting(body: bytes, expected: Faults) -> None:
    assert parse_faults(body) == expected


@pytest.mark.parametrize(("body", "field"), [
    (b'{"error_rate": 1.5}', "error_rate"),
    (b'{"error_rate": -0.1}', "error_rate"),
    (b'{"error_rate": null}', "error_rate"),
    (b'{"error_rate": "0.5"}', "error_rate"),
    (b'{"error_rate": NaN}', "error_rate"),
    (b'{"decline_rate": true}', "decline_rate"),
    (b'{"decline_rate": 2}', "decline_rate"),
    (b'{"latency_ms": -1}', "latency_ms"),
    (b'{"latency_ms": "100"}', "latency_ms"),
    (b'{"latency_ms": 60001}', "latency_ms"),
    (b'{"latency_jitter_ms": 1.5}', "latency_jitter_ms"),
    (b'{"unavailable_for_s": -1}', "unavailable_for_s"),
    (b'{"unavailable_for_s": 3601}', "unavailable_for_s"),
    (b'{"unavailable_for_s": Infinity}', "unavailable_for_s"),
    (b'{"error_rat": 0.5}', "error_rat"),
    (b'{"pricing_drift": {"country": "XX", "kind": "tax_round_down"}}', "pricing_drift.country"),
    (b'{"pricing_drift": {"country": "de", "kind": "tax_round_down"}}', "pricing_drift.country"),
    (b'{"pricing_drift": {"country": 49, "kind": "tax_round_down"}}', "pricing_drift.country"),
    (b'{"pricing_drift": {"kind": "tax_round_down"}}', "pricing_drift.country"),
    (b'{"pricing_drift": {"country": "DE", "kind": "tax_round_up"}}', "pricing_drift.kind"),
    (b'{"pricing_drift": {"country": "DE"}}', "pricing_drift.kind"),
    (b'{"pricing_drift": {"country": "DE", "kind": "tax_round_down", "rate": 1}}',
     "pricing_drift.rate"),
    (b'{"pricing_drift": "DE"}', "pricing_drift"),
    (b'{"pricing_drift": true}', "pricing_drift"),
    (b"[1]", "body"),
    (b'"off"', "body"),
])
def test_a_bad_fault_body_names_its_field(body: bytes, field: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_faults(body)
    assert field in [error.field for error in refused.value.errors]


@pytest.mark.parametrize("body", [b"", b"{", b"slow please"])
def test_a_fault_body_that_is_not_json_is_a_bad_request(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_faults(body)


# --- which routes the faults touch ----------------------------------------------------------


def test_every_contract_route_and_no_ops_route_is_a_contract_path() -> None:
    assert all(is_contract_path(route.path) for route in api.ROUTES)
    assert not any(is_contract_path(route.path) for route in ops.ROUTES)
    assert not is_contract_path("/_faults") and not is_contract_path("/cartsx")


MakeClient = Callable[[FaultSwitch, SleepRecorder], httpx.AsyncClient]


async def _ok(request: Request) -> Response:
    return PlainTextResponse("ok")


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    """A client of a bare app behind `FaultMiddleware`: every path answers 200 "ok"."""
    clients: list[httpx.AsyncClient] = []

    def make(switch: FaultSwitch, sleep: SleepRecorder) -> httpx.AsyncClient:
        app = Starlette(routes=[Route("/{path:path}", _ok, methods=["GET", "POST", "PUT"])],
                        middleware=[Middleware(FaultMiddleware, switch=switch, sleep=sleep)])
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                   base_url="http://core.test")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


OPS_PATHS = ["/healthz", "/readyz", "/metrics", "/openapi.yaml", "/_faults",
             "/_downstream/orders"]


async def test_latency_and_errors_touch_the_contract_routes_only(make_client: MakeClient) -> None:
    sleep = SleepRecorder()
    client = make_client(make_switch(latency_ms=200, error_rate=1.0), sleep)
    for path in OPS_PATHS:
        assert (await client.get(path)).status_code == 200, path
    assert sleep.delays == []
    response = await client.post("/carts")
    assert response.status_code == 500
    assert response.json()["type"].endswith("/injected-fault")
    assert sleep.delays == [pytest.approx(0.2)]


async def test_the_unavailable_window_spares_liveness_and_the_switch(make_client: MakeClient) -> None:
    clock = FakeClock()
    sleep = SleepRecorder()
    client = make_client(make_switch(clock, latency_ms=200, unavailable_for_s=2.5), sleep)
    for path in ("/carts/co_cart_x", "/readyz"):
        response = await client.get(path)
        assert response.status_code == 503, path
        assert response.headers["retry-after"] == "3"
    assert sleep.delays == []
    for path in ("/healthz", "/metrics", "/_faults"):
        assert (await client.get(path)).status_code == 200, path
    clock.now += 2.5
    assert (await client.get("/readyz")).status_code == 200
    assert (await client.get("/carts/co_cart_x")).status_code == 200
