"""Shadow parity end to end through `strangler up`: the real core, the real legacy stub, a
known pricing drift switched on in the core, and customers who all stay on legacy.

The core's fault switch (`PUT /_faults`, `pricing_drift`) raises Sweden's tax rate by one
point: on every non-empty Swedish cart exactly `tax` and `total` differ, and nothing else.
The report must name exactly those fields, on exactly the routes that show a non-empty
cart, for the Swedish carts only; no order may reach the core; and the customers' answers
must be the same as with the shadow off.
"""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import run_cli, running_up
from tests.support.processes import wait_until

pytestmark = pytest.mark.e2e

RULES = """\
schema: 1
funnels:
  - name: hardware
    match: {header: hardware}
    salt: hw-parity
    shadow: {share: 100}
    rules:
      - {id: all-legacy, countries: '*', percent: 0}
"""
CUSTOMERS = {"SE": 6, "DE": 6}
ADDRESS = {"name": "Ada Lovelace", "line1": "Storgatan 1", "city": "Stockholm",
           "postal_code": "111 22"}
CART_ROUTES = ("POST /carts/{cart_id}/items", "PATCH /carts/{cart_id}/items/{sku}",
               "GET /carts/{cart_id}", "POST /carts/{cart_id}/checkout")


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, Path, Path]]:
    data_dir = tmp_path_factory.mktemp("shadow-up")
    rules = data_dir / "rules.yaml"
    rules.write_text(RULES)
    # every order placed (no declines): the answers with the shadow on and off compare
    env = {"STRANGLER_GUARD_INTERVAL": "0.5", "LEGACY_STUB_DECLINE_RATE": "0"}
    with running_up(data_dir, rules, legacy_latency_ms=0, env=env) as running:
        yield running.url, running.port, data_dir, rules


def customer(url: str, country: str) -> list[httpx.Response]:
    """A whole checkout on legacy: build a cart, change it, read it, check out, pay."""
    session = {"X-Checkout-Session": f"parity-{country}-{uuid.uuid4().hex}"}
    headers = {"X-Checkout-Funnel": "hardware", "X-Country": country, **session}
    currency = "SEK" if country == "SE" else "EUR"
    out: list[httpx.Response] = []
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        def call(method: str, path: str, body: Any = None, **kw: Any) -> httpx.Response:
            response = client.request(method, path, json=body, **kw)
            assert response.status_code < 300, response.text
            assert response.headers["x-checkout-backend"] == "legacy"
            out.append(response)
            return response

        cart = call("POST", "/carts", {"country": country, "currency": currency}).json()
        path = f"/carts/{cart['id']}"
        call("POST", f"{path}/items", {"sku": "HW-PHONE-6", "quantity": 1})
        call("POST", f"{path}/items", {"sku": "AC-CASE-6", "quantity": 1})
        call("PATCH", f"{path}/items/AC-CASE-6", {"quantity": 2})
        call("GET", path)
        checkout = call("POST", f"{path}/checkout", {
            "email": "ada@example.com", "shipping_address": {**ADDRESS, "country": country}})
        call("POST", f"/checkouts/{checkout.json()['id']}/orders",
             {"payment": {"method": "card", "token": "tok_visa"}},
             headers={"Idempotency-Key": uuid.uuid4().hex})
    return out


def mirror_stats(url: str) -> dict[str, Any]:
    return httpx.get(url + "/_strangler/state", timeout=10).json()["shadow"]


def settled(url: str, expected: int) -> dict[str, Any] | None:
    stats = mirror_stats(url)
    done = stats["compared"] + sum(stats["dropped"].values())
    return stats if done >= expected and stats["queued"] == 0 else None


IDS = re.compile(rb"(lg|pay)_[A-Za-z0-9_]+")
TIMES = re.compile(rb"\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d)?")


def shape(r: httpx.Response) -> tuple[int, list[str], bytes]:
    names = sorted(k for k in r.headers if k not in ("date", "content-length"))
    return r.status_code, names, TIMES.sub(b"T", IDS.sub(b"ID", r.content))


def test_a_known_pricing_drift_is_named_exactly_and_no_order_reaches_the_core(up) -> None:
    url, port, data_dir, rules = up
    core = f"http://127.0.0.1:{port + 1}"
    drift = httpx.put(core + "/_faults", json={
        "pricing_drift": {"country": "SE", "kind": "tax_rate_plus_100bp"}})
    assert drift.status_code == 200, drift.text
    answers = {country: [customer(url, country) for _ in range(n)]
               for country, n in CUSTOMERS.items()}
    mirrored = sum(CUSTOMERS.values()) * 6  # every step but the order
    stats = wait_until(lambda: settled(url, mirrored), 60, "the mirror compared every step")
    assert stats["compared"] == mirrored and not stats["dropped"], stats

    # the report, as the CLI reads it from the control store
    def report() -> dict[str, Any] | None:
        done = run_cli("shadow", "diff", "--funnel", "hardware", "--json", data_dir=data_dir,
                       check=False)
        if done.returncode != 0:
            return None
        summary: dict[str, Any] = json.loads(done.stdout)
        return summary if _compared(summary) >= mirrored else None

    summary = wait_until(report, 60, "the stored shadow summary")
    routes = summary["funnels"]["hardware"]["routes"]
    se = CUSTOMERS["SE"]
    for route in CART_ROUTES:
        fields = routes[route]["fields"]
        differing = {name: f["mismatches"] for name, f in fields.items() if f["mismatches"]}
        per_customer = 2 if route == "POST /carts/{cart_id}/items" else 1
        # every Swedish cart (never empty here), no German one, and no other field
        assert differing == {"tax": se * per_customer, "total": se * per_customer}, route
        assert routes[route]["comparisons"] == sum(CUSTOMERS.values()) * per_customer
    assert routes["POST /carts"]["mismatches"] == 0  # an empty cart has no tax
    assert not [r for r in routes if "orders" in r]
    units = summary["funnels"]["hardware"]["units"]
    assert (units["compared"], units["with_mismatch"]) == (sum(CUSTOMERS.values()), se)

    # no order from the shadow: the core holds no order, only shadow carts
    with sqlite3.connect(f"file:{data_dir / 'checkout_core.sqlite3'}?mode=ro", uri=True) as db:
        assert db.execute("SELECT count(*) FROM orders").fetchone() == (0,)
        carts = db.execute("SELECT count(*), sum(shadow) FROM carts").fetchone()
    assert carts == (sum(CUSTOMERS.values()), sum(CUSTOMERS.values()))

    # the same customers with the shadow off get the same answers
    version = rules_version(url)
    rules.write_text(RULES.replace("share: 100", "share: 0"))
    wait_until(lambda: rules_version(url) != version, 30, "the rules without the shadow")
    submitted = mirror_stats(url)["submitted"]
    for country, before in answers.items():
        again = customer(url, country)
        assert [shape(r) for r in again] == [shape(r) for r in before[0]], country
    assert mirror_stats(url)["submitted"] == submitted


def rules_version(url: str) -> Any:
    return httpx.get(url + "/_strangler/state", timeout=10).json()["rules_version"]


def _compared(summary: dict[str, Any]) -> int:
    funnel = summary.get("funnels", {}).get("hardware")
    return int(funnel["comparisons"]) if funnel else 0
