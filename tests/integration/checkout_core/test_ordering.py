"""Placing orders through the service with the fake gateway: idempotency, declines,
reconciliation, and crashes between the steps."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from checkout_core.adapters.fake_gateway import FakeGateway, FakeGatewayConfig
from checkout_core.bootstrap import Core
from checkout_core.domain import events as ev
from checkout_core.domain.errors import (
    CheckoutCompleted,
    CheckoutPaymentInProgress,
    IdempotencyKeyReuse,
    IdempotencyRequestInProgress,
    NotFound,
    PaymentDeclined,
    PaymentUnavailable,
)
from checkout_core.service.ports import ChargeRequest, GatewayTimeout, PaymentResult

from .helpers import command, open_checkout, place

MakeCore = Callable[..., Core]


class Crash(Exception):
    """Stands for the process dying: not a gateway error, so nothing handles it."""


class ChargesThenCrashes(FakeGateway):
    async def authorize(self, request: ChargeRequest) -> PaymentResult:
        await super().authorize(request)
        raise Crash("process died after the charge")


class LookupDown(FakeGateway):
    down = True

    async def lookup(self, idempotency_key: str) -> PaymentResult | None:
        if self.down:
            self.lookup_calls.append(idempotency_key)
            raise GatewayTimeout("lookup timed out")
        return await super().lookup(idempotency_key)


def naive(cls: type[FakeGateway] = FakeGateway, **config: Any) -> FakeGateway:
    """A provider that does not deduplicate keys: only the core can prevent double charges."""
    return cls(FakeGatewayConfig(timeout_seconds=0, honours_idempotency_keys=False, **config))


async def events_of(core: Core) -> list[str]:
    rows = await core.db.run(lambda c: c.execute("SELECT type FROM outbox ORDER BY seq")
                             .fetchall(), write=False)
    return [row["type"] for row in rows]


async def test_an_order_completes_the_checkout_and_writes_its_events(make_core: MakeCore) -> None:
    core = make_core()
    checkout = await open_checkout(core, promotion="WELCOME10")
    order = await place(core, checkout.id, "k1")
    assert order.id.startswith("co_ord_") and order.total == 171146
    assert order.payment.amount == 171146 and order.payment.id.startswith("pay_")
    assert await core.carts.get_order(order.id) == order
    assert (await events_of(core))[-2:] == [ev.ORDER_PLACED, ev.PAYMENT_AUTHORIZED]
    with pytest.raises(CheckoutCompleted):
        await place(core, checkout.id, "k2")


async def test_same_key_same_body_replays_without_charging_again(make_core: MakeCore) -> None:
    core = make_core(gateway=naive())
    checkout = await open_checkout(core)
    first = await place(core, checkout.id, "k1")
    assert await place(core, checkout.id, "k1") == first
    assert len(core.gateway.charges) == 1


async def test_same_key_different_body_is_reuse(make_core: MakeCore) -> None:
    core = make_core()
    checkout = await open_checkout(core)
    await place(core, checkout.id, "k1")
    with pytest.raises(IdempotencyKeyReuse):
        await place(core, checkout.id, "k1", token="tok_mastercard")
    other = await open_checkout(core)
    with pytest.raises(IdempotencyKeyReuse):
        await place(core, other.id, "k1")


async def test_a_decline_keeps_the_checkout_open_and_is_replayed(make_core: MakeCore) -> None:
    core = make_core()
    checkout = await open_checkout(core)
    with pytest.raises(PaymentDeclined) as first:
        await place(core, checkout.id, "k1", token="tok_decline")
    with pytest.raises(PaymentDeclined) as again:
        await place(core, checkout.id, "k1", token="tok_decline")
    assert first.value.detail == again.value.detail
    assert len(core.gateway.authorize_calls) == 1
    assert ev.PAYMENT_FAILED in await events_of(core)
    order = await place(core, checkout.id, "k2")
    assert order.checkout_id == checkout.id


async def test_unknown_checkout_is_not_found_and_replayed(make_core: MakeCore) -> None:
    core = make_core()
    for _ in range(2):
        with pytest.raises(NotFound):
            await place(core, "co_chk_nope", "k1")


async def test_the_gateway_times_out_after_charging_and_nothing_is_charged_twice(
    make_core: MakeCore,
) -> None:
    core = make_core(gateway=naive())
    core.gateway.script("charge_then_timeout")
    checkout = await open_checkout(core)
    order = await place(core, checkout.id, "k1")
    [charge] = core.gateway.charges
    assert order.payment.id == charge.result.payment_id
    assert core.gateway.lookup_calls == [f"{checkout.id}:k1"]
    assert len(core.gateway.authorize_calls) == 1


async def test_an_unconfirmed_payment_is_503_then_reconciled_by_the_same_key(
    make_core: MakeCore,
) -> None:
    gateway = naive(LookupDown)
    core = make_core(gateway=gateway, payment_max_attempts=2)
    gateway.script("charge_then_timeout")
    checkout = await open_checkout(core)
    with pytest.raises(PaymentUnavailable):
        await place(core, checkout.id, "k1")
    LookupDown.down = False
    try:
        order = await place(core, checkout.id, "k1")
    finally:
        LookupDown.down = True
    assert len(gateway.charges) == 1 and len(gateway.authorize_calls) == 1
    assert order.payment.id == gateway.charges[0].result.payment_id


async def test_a_crash_after_charging_is_finished_by_the_next_request_with_the_key(
    make_core: MakeCore,
) -> None:
    gateway = naive(ChargesThenCrashes)
    core = make_core(gateway=gateway, idempotency_lease_seconds=0.2,
                     idempotency_wait_seconds=0.05)
    checkout = await open_checkout(core)
    with pytest.raises(Crash):
        await place(core, checkout.id, "k1")
    with pytest.raises(IdempotencyRequestInProgress):
        await place(core, checkout.id, "k1")  # the lease still runs: wait, then 409
    await asyncio.sleep(0.2)
    order = await place(core, checkout.id, "k1")  # takes over, reconciles first
    assert len(gateway.charges) == 1 and len(gateway.authorize_calls) == 1
    assert order.payment.id == gateway.charges[0].result.payment_id


async def test_another_key_settles_a_crashed_attempt_that_charged(make_core: MakeCore) -> None:
    gateway = naive(ChargesThenCrashes)
    core = make_core(gateway=gateway, idempotency_lease_seconds=0.1)
    checkout = await open_checkout(core)
    with pytest.raises(Crash):
        await place(core, checkout.id, "k1")
    with pytest.raises(CheckoutPaymentInProgress):
        await place(core, checkout.id, "k2")  # k1 still holds the checkout
    await asyncio.sleep(0.1)
    with pytest.raises(CheckoutCompleted):
        await place(core, checkout.id, "k2")
    order = await place(core, checkout.id, "k1")  # k1's order was placed by the settlement
    assert len(gateway.charges) == 1
    assert order.payment.id == gateway.charges[0].result.payment_id


async def test_another_key_pays_when_a_crashed_attempt_never_charged(make_core: MakeCore) -> None:
    class CrashesBeforeCharging(FakeGateway):
        crashes = 1

        async def authorize(self, request: ChargeRequest) -> PaymentResult:
            if self.crashes:
                self.crashes -= 1
                raise Crash("died before the charge")
            return await super().authorize(request)

    gateway = naive(CrashesBeforeCharging)
    core = make_core(gateway=gateway, idempotency_lease_seconds=0.05)
    checkout = await open_checkout(core)
    with pytest.raises(Crash):
        await place(core, checkout.id, "k1")
    await asyncio.sleep(0.06)
    order = await place(core, checkout.id, "k2")
    assert f"{checkout.id}:k1" in gateway.lookup_calls
    assert [c.idempotency_key for c in gateway.charges] == [f"{checkout.id}:k2"]
    assert order.payment.id == gateway.charges[0].result.payment_id


async def test_concurrent_duplicates_wait_and_replay_the_first_result(
    make_core: MakeCore,
) -> None:
    gateway = naive(latency_seconds=0.05)
    core = make_core(gateway=gateway)
    checkout = await open_checkout(core)
    orders = await asyncio.gather(*(place(core, checkout.id, "k1") for _ in range(10)))
    assert len({o.id for o in orders}) == 1
    assert len(gateway.charges) == 1


async def test_concurrent_keys_for_one_checkout_place_one_order(make_core: MakeCore) -> None:
    gateway = naive(latency_seconds=0.05)
    core = make_core(gateway=gateway)
    checkout = await open_checkout(core)
    results = await asyncio.gather(
        *(core.orders.place_order(command(checkout.id, f"k{i}")) for i in range(6)),
        return_exceptions=True,
    )
    placed = [r for r in results if not isinstance(r, Exception)]
    assert len(placed) == 1 and len(gateway.charges) == 1
    assert all(isinstance(r, (CheckoutPaymentInProgress, CheckoutCompleted))
               for r in results if isinstance(r, Exception))
