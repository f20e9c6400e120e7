"""The payment processor: reconcile before retrying, bounded backoff, never charge twice."""

from __future__ import annotations

import asyncio
import random

import pytest

from checkout_core.adapters.fake_gateway import FakeGateway, FakeGatewayConfig
from checkout_core.domain.errors import PaymentUnavailable
from checkout_core.retry import Backoff
from checkout_core.service.payments import UNKNOWN, PaymentProcessor
from checkout_core.service.ports import ChargeRequest, GatewayTimeout, PaymentResult

REQUEST = ChargeRequest("co_chk_1:k1", 171146, "EUR", "tok_visa")


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def processor(gateway: FakeGateway, sleeps: Sleeps | None = None,
              attempts: int = 4, timeout: float = 1.0) -> PaymentProcessor:
    return PaymentProcessor(gateway, Backoff(attempts, 0.05, 0.2), timeout, random.Random(7),
                            sleep=sleeps or Sleeps())


def naive_gateway() -> FakeGateway:
    return FakeGateway(FakeGatewayConfig(timeout_seconds=0, honours_idempotency_keys=False))


async def test_a_gateway_that_times_out_after_charging_is_reconciled_not_charged_again() -> None:
    gateway = naive_gateway()
    gateway.script("charge_then_timeout")
    result = await processor(gateway).charge(REQUEST)
    assert result.status == "authorized"
    assert len(gateway.charges) == 1
    assert gateway.authorize_calls == [REQUEST.idempotency_key]
    assert gateway.lookup_calls == [REQUEST.idempotency_key]
    assert result == gateway.charges[0].result


async def test_a_timeout_before_charging_is_looked_up_then_retried() -> None:
    gateway = naive_gateway()
    gateway.script("timeout", "unavailable", None)
    sleeps = Sleeps()
    result = await processor(gateway, sleeps).charge(REQUEST)
    assert result.status == "authorized"
    assert len(gateway.charges) == 1
    assert len(gateway.authorize_calls) == 3
    assert len(gateway.lookup_calls) == 2
    assert len(sleeps.delays) == 2
    assert sleeps.delays[0] <= 0.05 and sleeps.delays[1] <= 0.1


async def test_persistent_failure_raises_unavailable_after_bounded_attempts() -> None:
    gateway = naive_gateway()
    gateway.script(*["timeout"] * 10)
    sleeps = Sleeps()
    with pytest.raises(PaymentUnavailable):
        await processor(gateway, sleeps, attempts=3).charge(REQUEST)
    assert len(gateway.authorize_calls) == 3
    assert len(gateway.lookup_calls) == 3  # before each retry, and once at the end
    assert gateway.charges == []
    assert all(0 <= d <= 0.2 for d in sleeps.delays)


async def test_a_failing_lookup_never_leads_to_a_blind_charge() -> None:
    class LookupDown(FakeGateway):
        async def lookup(self, idempotency_key: str) -> PaymentResult | None:
            self.lookup_calls.append(idempotency_key)
            raise GatewayTimeout("lookup timed out")

    gateway = LookupDown(FakeGatewayConfig(timeout_seconds=0, honours_idempotency_keys=False))
    gateway.script("charge_then_timeout")
    with pytest.raises(PaymentUnavailable):
        await processor(gateway, attempts=3).charge(REQUEST)
    assert len(gateway.authorize_calls) == 1
    assert len(gateway.charges) == 1


async def test_reconcile_first_finds_an_earlier_charge_without_authorizing() -> None:
    gateway = naive_gateway()
    await gateway.authorize(REQUEST)
    result = await processor(gateway).charge(REQUEST, reconcile_first=True)
    assert result == gateway.charges[0].result
    assert len(gateway.authorize_calls) == 1


async def test_a_declined_charge_is_returned_not_retried() -> None:
    gateway = naive_gateway()
    result = await processor(gateway).charge(ChargeRequest("k", 1, "EUR", "tok_decline"))
    assert result.status == "declined"
    assert len(gateway.authorize_calls) == 1


async def test_a_hanging_gateway_is_cut_off_by_the_call_timeout() -> None:
    class Hanging(FakeGateway):
        async def lookup(self, idempotency_key: str) -> PaymentResult | None:
            await asyncio.sleep(10)
            return None

    p = processor(Hanging(), timeout=0.01)
    assert await p.reconcile("k") is UNKNOWN
