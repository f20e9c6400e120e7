"""The fake gateway's ledger outlives the core: a core that charged and died before its
commit is succeeded by a new one (new gateway instance, same ledger file) that reconciles
the payment by its key instead of charging again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from checkout_core.adapters.fake_gateway import FakeGateway, FakeGatewayConfig, SqliteLedger
from checkout_core.bootstrap import Core
from checkout_core.service.ports import ChargeRequest, PaymentResult

from .conftest import SettingsFactory
from .helpers import open_checkout, place

MakeCore = Callable[..., Core]


class Crash(Exception):
    """Stands for the process dying after the charge, before the commit."""


class ChargesThenCrashes(FakeGateway):
    async def authorize(self, request: ChargeRequest) -> PaymentResult:
        await super().authorize(request)
        raise Crash("process died after the charge")


def naive(path: Path, cls: type[FakeGateway] = FakeGateway) -> FakeGateway:
    """A provider that does not deduplicate keys, on the ledger file: only reconciliation
    can prevent a second charge."""
    return cls(FakeGatewayConfig(timeout_seconds=0, honours_idempotency_keys=False),
               ledger=SqliteLedger.open(path))


async def test_a_restarted_core_reconciles_a_charge_made_before_the_crash(
    make_core: MakeCore, tmp_path: Path,
) -> None:
    ledger = tmp_path / "gateway.sqlite3"
    first = make_core(gateway=naive(ledger, ChargesThenCrashes), idempotency_lease_seconds=0.1)
    checkout = await open_checkout(first)
    with pytest.raises(Crash):
        await place(first, checkout.id, "k1")
    await asyncio.sleep(0.1)  # the dead request's lease runs out

    restarted = make_core(gateway=naive(ledger), idempotency_lease_seconds=0.1)
    order = await place(restarted, checkout.id, "k1")  # takes over, reconciles first

    [charge] = restarted.gateway.charges
    assert charge.idempotency_key == f"{checkout.id}:k1"
    assert order.payment.id == charge.result.payment_id
    assert restarted.gateway.lookup_calls == [f"{checkout.id}:k1"]
    assert restarted.gateway.authorize_calls == []


async def test_the_configured_ledger_file_is_shared_by_cores_on_one_database(
    make_core: MakeCore, make_settings: SettingsFactory, db_path: Path,
) -> None:
    first = make_core()
    order = await place(first, (await open_checkout(first)).id, "k1")
    second = make_core()
    ledger = second.gateway.ledger
    assert isinstance(ledger, SqliteLedger)
    assert ledger.path == db_path.with_name("core.gateway.sqlite3") != db_path
    assert [c.result.payment_id for c in second.gateway.charges] == [order.payment.id]
    assert make_settings().gateway_ledger_path == ledger.path


async def test_a_ledger_in_memory_is_per_gateway(make_core: MakeCore) -> None:
    first = make_core(gateway_ledger_path=":memory:")
    await place(first, (await open_checkout(first)).id, "k1")
    assert len(first.gateway.charges) == 1
    assert make_core(gateway_ledger_path=":memory:").gateway.charges == []
