from __future__ import annotations

import random

import pytest

from checkout_core.adapters.fake_gateway import FakeGateway, FakeGatewayConfig
from checkout_core.service.ports import ChargeRequest, GatewayTimeout, GatewayUnavailable


def request(key: str = "k1", token: str = "tok_visa") -> ChargeRequest:
    return ChargeRequest(key, 1000, "EUR", token)


async def test_tok_decline_always_declines() -> None:
    result = await FakeGateway().authorize(request(token="tok_decline"))
    assert (result.status, result.decline_reason) == ("declined", "card_declined")


@pytest.mark.parametrize(("rate", "status"), [(0.0, "authorized"), (1.0, "declined")])
async def test_other_tokens_follow_the_decline_rate(rate: float, status: str) -> None:
    gateway = FakeGateway(FakeGatewayConfig(decline_rate=rate), random.Random(1))
    assert (await gateway.authorize(request())).status == status


async def test_a_repeated_key_returns_the_first_result_like_a_real_provider() -> None:
    gateway = FakeGateway()
    first = await gateway.authorize(request())
    assert await gateway.authorize(request()) == first
    assert len(gateway.charges) == 1


async def test_a_naive_provider_charges_again() -> None:
    gateway = FakeGateway(FakeGatewayConfig(honours_idempotency_keys=False))
    await gateway.authorize(request())
    await gateway.authorize(request())
    assert len(gateway.authorized()) == 2


async def test_scripted_faults() -> None:
    gateway = FakeGateway(FakeGatewayConfig(timeout_seconds=0))
    gateway.script("unavailable", "timeout", "charge_then_timeout")
    with pytest.raises(GatewayUnavailable):
        await gateway.authorize(request("a"))
    with pytest.raises(GatewayTimeout):
        await gateway.authorize(request("b"))
    with pytest.raises(GatewayTimeout):
        await gateway.authorize(request("c"))
    assert await gateway.lookup("a") is None
    assert await gateway.lookup("b") is None
    found = await gateway.lookup("c")
    assert found is not None and found.status == "authorized"


@pytest.mark.parametrize(
    ("config", "error"),
    [
        (FakeGatewayConfig(timeout_rate=1.0, timeout_seconds=0), GatewayTimeout),
        (FakeGatewayConfig(unknown_rate=1.0, timeout_seconds=0), GatewayTimeout),
    ],
)
async def test_random_faults_follow_their_rates(
    config: FakeGatewayConfig, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await FakeGateway(config).authorize(request())
