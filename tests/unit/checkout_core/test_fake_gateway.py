from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from checkout_core.adapters.fake_gateway import (
    FakeGateway,
    FakeGatewayConfig,
    MemoryLedger,
    SqliteLedger,
    open_ledger,
)
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


# -- the ledger ------------------------------------------------------------------------------

def on_file(path: Path, **config: Any) -> FakeGateway:
    return FakeGateway(FakeGatewayConfig(timeout_seconds=0, **config),
                       ledger=SqliteLedger.open(path))


@pytest.mark.parametrize("path", [None, ":memory:", Path(":memory:")])
def test_no_path_is_the_ledger_in_memory(path: Path | str | None) -> None:
    assert isinstance(open_ledger(path), MemoryLedger)


def test_a_path_is_a_ledger_file(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "sub" / "gw.sqlite3")
    assert isinstance(ledger, SqliteLedger) and ledger.path.exists()
    assert ledger.charges() == []


async def test_the_ledger_file_survives_a_new_gateway_instance(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite3"
    first = on_file(path)
    charged = await first.authorize(request("k1"))
    declined = await first.authorize(request("k2", token="tok_decline"))
    restarted = on_file(path)  # a new process on the same file
    assert await restarted.lookup("k1") == charged
    assert await restarted.lookup("k2") == declined
    assert await restarted.lookup("k3") is None
    assert await restarted.authorize(request("k1")) == charged  # a replay, not a charge
    assert [(c.idempotency_key, c.result, c.replays) for c in restarted.charges] == [
        ("k1", charged, 1), ("k2", declined, 0)]


async def test_a_naive_provider_on_a_file_charges_again_and_lookup_finds_the_first(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gw.sqlite3"
    first = await on_file(path, honours_idempotency_keys=False).authorize(request())
    again = await on_file(path, honours_idempotency_keys=False).authorize(request())
    assert first.payment_id != again.payment_id
    assert await on_file(path).lookup("k1") == first
    assert len(on_file(path).authorized()) == 2


async def test_a_charge_then_timeout_is_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite3"
    gateway = on_file(path)
    gateway.script("charge_then_timeout", "timeout")
    with pytest.raises(GatewayTimeout):
        await gateway.authorize(request("a"))
    with pytest.raises(GatewayTimeout):
        await gateway.authorize(request("b"))
    restarted = on_file(path)
    assert (await restarted.lookup("a")) is not None
    assert await restarted.lookup("b") is None


async def test_instances_on_one_file_charge_a_key_once_when_they_race(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite3"
    gateways = [on_file(path) for _ in range(8)]
    results = await asyncio.gather(*(g.authorize(request("same")) for g in gateways))
    assert len({r.payment_id for r in results}) == 1
    [charge] = gateways[0].charges
    assert charge.replays == 7


def test_processes_on_one_file_charge_each_key_once(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite3"
    SqliteLedger.open(path)
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from checkout_core.adapters.fake_gateway import FakeGateway, SqliteLedger\n"
        "from checkout_core.service.ports import ChargeRequest\n"
        "g = FakeGateway(ledger=SqliteLedger.open(Path(sys.argv[1])))\n"
        "async def main():\n"
        "    for i in range(20):\n"
        "        await g.authorize(ChargeRequest(f'k{i}', 1000, 'EUR', 'tok_visa'))\n"
        "asyncio.run(main())\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path)]) for _ in range(4)]
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0]
    charges = SqliteLedger.open(path).charges()
    assert sorted(c.idempotency_key for c in charges) == sorted(f"k{i}" for i in range(20))
    assert sum(c.replays for c in charges) == 60
