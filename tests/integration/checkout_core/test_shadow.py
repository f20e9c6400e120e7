"""Shadow traffic in the core (docs/checkout_core.md, "Shadow traffic"), on real SQLite files
and real servers: marks persisted and inherited, no events, no orders, expiry, traffic kept
apart, and the pricing drift of `/_faults`."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from checkout_core.adapters.fake_gateway import FakeGateway
from checkout_core.adapters.sqlite_db import SqliteDatabase
from checkout_core.adapters.sqlite_store import iso
from checkout_core.bootstrap import Core
from checkout_core.domain.errors import NotShadow, ShadowCheckout, ShadowResource
from checkout_core.ids import utc_now
from checkout_core.main import create_app
from checkout_core.service.ports import ShadowExpired
from tests.support.processes import wait_until
from tests.support.servers import serve

from .conftest import SettingsFactory
from .helpers import ADDRESS, ADDRESS_JSON, command, payment_body

PROBLEM = "application/problem+json"
SHADOW = {"X-Checkout-Shadow": "1"}
MakeCore = Callable[..., Core]


def rows(db_path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db_path)) as conn:
        return conn.execute(sql, args).fetchall()


def count(db_path: Path, table: str) -> int:
    return int(rows(db_path, f"SELECT count(*) FROM {table}")[0][0])


def age(db_path: Path, cart_id: str, seconds: float) -> None:
    """Make a cart (and its checkout) look created `seconds` ago."""
    then = iso(utc_now() - timedelta(seconds=seconds))
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("UPDATE carts SET created_at = ?, updated_at = ? WHERE id = ?",
                     (then, then, cart_id))
        conn.execute("UPDATE checkouts SET created_at = ?, updated_at = ? WHERE cart_id = ?",
                     (then, then, cart_id))


async def build(core: Core, shadow: bool, checkout: bool = True) -> tuple[str, str | None]:
    """A cart with items (and its checkout) through every cart use case; their ids."""
    cart = (await core.carts.create_cart("DE", "EUR", shadow=shadow)).cart.id
    await core.carts.add_item(cart, "HW-PHONE-6", 1, shadow=shadow)
    await core.carts.add_item(cart, "AC-CASE-6", 1, shadow=shadow)
    await core.carts.change_quantity(cart, "AC-CASE-6", 2, shadow=shadow)
    await core.carts.remove_item(cart, "AC-CASE-6", shadow=shadow)
    if not checkout:
        return cart, None
    started = await core.carts.start_checkout(cart, "a@b.example", ADDRESS, None, shadow=shadow)
    return cart, started.id


# --- marks, events, orders (the services on a real file) ----------------------------------


async def test_the_marks_are_persisted_and_inherited(make_core: MakeCore, db_path: Path) -> None:
    core = make_core()
    shadow_cart, shadow_checkout = await build(core, shadow=True)
    real_cart, real_checkout = await build(core, shadow=False)
    assert rows(db_path, "SELECT id, shadow FROM carts ORDER BY shadow") == \
        [(real_cart, 0), (shadow_cart, 1)]
    assert rows(db_path, "SELECT id, cart_id, shadow FROM checkouts ORDER BY shadow") == \
        [(real_checkout, real_cart, 0), (shadow_checkout, shadow_cart, 1)]
    # a core started again on the file knows which is which
    again = make_core()
    assert (await again.carts.get_cart(shadow_cart, shadow=True)).cart.shadow
    assert not (await again.carts.get_cart(real_cart)).cart.shadow
    with pytest.raises(ShadowResource):
        await again.carts.get_cart(shadow_cart)
    with pytest.raises(NotShadow):
        await again.carts.get_cart(real_cart, shadow=True)


async def test_shadow_carts_and_checkouts_write_no_events(
    make_core: MakeCore, db_path: Path
) -> None:
    core = make_core()
    await build(core, shadow=True)
    assert count(db_path, "outbox") == 0
    assert await core.relay.drain() == 0
    await build(core, shadow=False)
    types = [row[0] for row in rows(db_path, "SELECT type FROM outbox ORDER BY seq")]
    assert types == ["cart.created", "cart.item_added", "cart.item_added",
                     "cart.item_quantity_changed", "cart.item_removed", "checkout.started"]
    assert await core.relay.drain() == 6


@pytest.mark.parametrize("shadow_request", [False, True])
async def test_no_order_is_placed_for_a_shadow_checkout_and_nothing_is_charged(
    make_core: MakeCore, db_path: Path, shadow_request: bool
) -> None:
    gateway = FakeGateway(rng=random.Random(1))
    core = make_core(gateway)
    _, checkout_id = await build(core, shadow=True)
    assert checkout_id is not None
    cmd = command(checkout_id, "k1")
    for _ in range(2):  # and again: nothing was recorded under the key
        with pytest.raises(ShadowCheckout):
            await core.orders.place_order(replace(cmd, shadow=shadow_request))
    assert gateway.authorize_calls == [] and gateway.lookup_calls == []
    assert (count(db_path, "orders"), count(db_path, "idempotency_keys")) == (0, 0)
    assert rows(db_path, "SELECT status, payment_key FROM checkouts") == [("open", None)]
    assert count(db_path, "outbox") == 0


async def test_a_shadow_request_never_places_an_order_for_a_real_checkout(
    make_core: MakeCore, db_path: Path
) -> None:
    gateway = FakeGateway(rng=random.Random(1))
    core = make_core(gateway)
    _, checkout_id = await build(core, shadow=False)
    assert checkout_id is not None
    real = command(checkout_id, "k1")
    with pytest.raises(NotShadow):
        await core.orders.place_order(replace(real, shadow=True))
    assert gateway.authorize_calls == []
    assert (count(db_path, "orders"), count(db_path, "idempotency_keys")) == (0, 0)
    # the key was not used up: the real request with it still pays
    order = await core.orders.place_order(real)
    assert order.checkout_id == checkout_id and len(gateway.authorize_calls) == 1


# --- expiry -------------------------------------------------------------------------------


async def test_the_expiry_deletes_old_shadow_carts_only_in_bounded_batches(
    make_core: MakeCore, db_path: Path
) -> None:
    core = make_core(shadow_ttl_seconds=3600, shadow_expiry_batch_size=2)
    old_shadow = [await build(core, shadow=True, checkout=n % 2 == 0) for n in range(5)]
    young_shadow = await build(core, shadow=True)
    old_real = await build(core, shadow=False)
    for cart_id, _ in [*old_shadow, old_real]:
        age(db_path, cart_id, 3601)
    age(db_path, young_shadow[0], 3500)

    assert await core.shadow_expiry.run_once() == ShadowExpired(carts=2, checkouts=1)
    assert count(db_path, "carts") == 7 - 2
    assert await core.shadow_expiry.sweep() == ShadowExpired(carts=3, checkouts=2)
    assert await core.shadow_expiry.sweep() == ShadowExpired()

    remaining = {row[0] for row in rows(db_path, "SELECT id FROM carts")}
    assert remaining == {young_shadow[0], old_real[0]}
    assert {row[0] for row in rows(db_path, "SELECT id FROM checkouts")} == \
        {young_shadow[1], old_real[1]}
    assert {row[0] for row in rows(db_path, "SELECT DISTINCT cart_id FROM cart_items")} == \
        remaining
    assert (await core.carts.get_cart(old_real[0])).cart.items == (("HW-PHONE-6", 1),)
    text = core.metrics.render().decode()
    assert 'checkout_core_shadow_expired_total{resource="cart"} 5.0' in text
    assert 'checkout_core_shadow_expired_total{resource="checkout"} 3.0' in text


# --- an older file ------------------------------------------------------------------------


OLD_SCHEMA = """
CREATE TABLE carts (id TEXT PRIMARY KEY, country TEXT NOT NULL, currency TEXT NOT NULL,
    status TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE cart_items (cart_id TEXT NOT NULL REFERENCES carts(id), position INTEGER NOT NULL,
    sku TEXT NOT NULL, quantity INTEGER NOT NULL, PRIMARY KEY (cart_id, sku));
CREATE TABLE checkouts (id TEXT PRIMARY KEY, cart_id TEXT NOT NULL UNIQUE REFERENCES carts(id),
    status TEXT NOT NULL, email TEXT NOT NULL, shipping_address TEXT NOT NULL,
    country TEXT NOT NULL, currency TEXT NOT NULL, lines TEXT NOT NULL, promotion_code TEXT,
    subtotal INTEGER NOT NULL, discount INTEGER NOT NULL, tax INTEGER NOT NULL,
    payment_key TEXT, payment_lease_until TEXT, created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL);
INSERT INTO carts VALUES ('co_cart_old', 'DE', 'EUR', 'open', '2026-01-01T00:00:00+00:00',
    '2026-01-01T00:00:00+00:00');
INSERT INTO cart_items VALUES ('co_cart_old', 0, 'HW-PHONE-6', 1);
"""


async def test_a_file_from_before_the_marks_is_upgraded(
    make_core: MakeCore, db_path: Path
) -> None:
    with closing(sqlite3.connect(db_path)) as conn:
        conn.executescript(OLD_SCHEMA)
    SqliteDatabase(db_path).initialize()
    SqliteDatabase(db_path).initialize()  # idempotent
    for table in ("carts", "checkouts"):
        columns = [row[1] for row in rows(db_path, f"PRAGMA table_info({table})")]
        assert columns.count("shadow") == 1, table
    assert rows(db_path, "SELECT id, shadow FROM carts") == [("co_cart_old", 0)]
    core = make_core(shadow_ttl_seconds=1)
    assert await core.shadow_expiry.sweep() == ShadowExpired()
    priced = await core.carts.get_cart("co_cart_old")
    assert (priced.cart.shadow, priced.totals.tax) == (False, 15181)
    checkout = await core.carts.start_checkout("co_cart_old", "a@b.example", ADDRESS, None)
    assert rows(db_path, "SELECT id, shadow FROM checkouts") == [(checkout.id, 0)]
    assert (await build(core, shadow=True))[0] in \
        {row[0] for row in rows(db_path, "SELECT id FROM carts WHERE shadow = 1")}


# --- over HTTP ----------------------------------------------------------------------------


CoreFactory = Callable[..., tuple[httpx.Client, FakeGateway]]


@pytest.fixture
def make_server(make_settings: SettingsFactory) -> Iterator[CoreFactory]:
    """A client of a fresh core on a real server, and its gateway; keyword arguments
    override its settings."""
    with ExitStack() as stack:
        def make(**overrides: Any) -> tuple[httpx.Client, FakeGateway]:
            gateway = FakeGateway(rng=random.Random(1))
            app = create_app(make_settings(**overrides), gateway=gateway)
            server = stack.enter_context(serve(app))
            return stack.enter_context(httpx.Client(base_url=server.url, timeout=10)), gateway

        yield make


def assert_problem(response: httpx.Response, status: int, slug: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["type"] == f"https://checkout.example/problems/{slug}"
    assert "x-checkout-shadow" not in response.headers


def http_cart(client: httpx.Client, headers: dict[str, str], country: str = "DE",
              currency: str = "EUR", skus: tuple[str, ...] = ("HW-PHONE-6",)) -> str:
    response = client.post("/carts", json={"country": country, "currency": currency},
                           headers=headers)
    assert response.status_code == 201, response.text
    cart_id = str(response.json()["id"])
    for sku in skus:
        added = client.post(f"/carts/{cart_id}/items", json={"sku": sku, "quantity": 1},
                            headers=headers)
        assert added.status_code == 201, added.text
    return cart_id


def http_checkout(client: httpx.Client, cart_id: str, headers: dict[str, str]) -> str:
    response = client.post(f"/carts/{cart_id}/checkout", headers=headers,
                           json={"email": "a@b.example", "shipping_address": ADDRESS_JSON})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def cart_requests(cart_id: str) -> list[tuple[str, str, Any]]:
    return [
        ("GET", f"/carts/{cart_id}", None),
        ("POST", f"/carts/{cart_id}/items", {"sku": "AC-CASE-6", "quantity": 1}),
        ("PATCH", f"/carts/{cart_id}/items/HW-PHONE-6", {"quantity": 3}),
        ("DELETE", f"/carts/{cart_id}/items/HW-PHONE-6", None),
        ("POST", f"/carts/{cart_id}/checkout",
         {"email": "a@b.example", "shipping_address": ADDRESS_JSON}),
    ]


def test_shadow_responses_carry_the_header_and_the_same_bodies(
    make_server: CoreFactory, db_path: Path
) -> None:
    client, _ = make_server()
    bodies: dict[bool, list[dict[str, Any]]] = {}
    for shadow in (False, True):
        headers = SHADOW if shadow else {}
        cart_id = http_cart(client, headers)
        responses = [client.request(method, path, json=body, headers=headers)
                     for method, path, body in cart_requests(cart_id)
                     if method != "DELETE"]
        for response in responses:
            assert response.status_code in (200, 201), response.text
            assert response.headers.get("x-checkout-shadow") == ("1" if shadow else None)
        bodies[shadow] = [{k: v for k, v in r.json().items() if k not in ("id", "cart_id")}
                          for r in responses]
    assert bodies[True] == bodies[False]
    assert rows(db_path, "SELECT shadow FROM carts ORDER BY shadow") == [(0,), (1,)]
    assert rows(db_path, "SELECT shadow FROM checkouts ORDER BY shadow") == [(0,), (1,)]
    metrics = client.get("/metrics").text
    for route, n in (("/carts", 1), ("/carts/{cart_id}", 1), ("/carts/{cart_id}/items", 2),
                     ("/carts/{cart_id}/items/{sku}", 1), ("/carts/{cart_id}/checkout", 1)):
        assert f'checkout_core_shadow_requests_total{{route="{route}"}} {n}.0' in metrics, route


def test_shadow_and_real_requests_never_mix(make_server: CoreFactory, db_path: Path) -> None:
    client, _ = make_server()
    real_cart = http_cart(client, {})
    shadow_cart = http_cart(client, SHADOW)
    before = {cart: client.get(f"/carts/{cart}", headers=headers).json()
              for cart, headers in ((real_cart, {}), (shadow_cart, SHADOW))}
    for cart_id, headers, slug in ((real_cart, SHADOW, "not-shadow"),
                                   (shadow_cart, {}, "shadow-resource")):
        for method, path, body in cart_requests(cart_id):
            assert_problem(client.request(method, path, json=body, headers=headers), 409, slug)
    after = {cart: client.get(f"/carts/{cart}", headers=headers).json()
             for cart, headers in ((real_cart, {}), (shadow_cart, SHADOW))}
    assert after == before
    assert count(db_path, "checkouts") == 0
    # unknown ids are 404 either way; a bad header value is refused, never guessed
    assert_problem(client.get("/carts/co_cart_nope", headers=SHADOW), 404, "not-found")
    for value in ("0", "true", "", "1,1"):
        response = client.get(f"/carts/{real_cart}", headers={"X-Checkout-Shadow": value})
        assert_problem(response, 400, "shadow-header-invalid")


def test_orders_are_refused_for_shadow_checkouts_and_shadow_requests_without_a_charge(
    make_server: CoreFactory, db_path: Path
) -> None:
    client, gateway = make_server()
    shadow_checkout = http_checkout(client, http_cart(client, SHADOW), SHADOW)
    real_checkout = http_checkout(client, http_cart(client, {}), {})
    cases = [(shadow_checkout, SHADOW, "shadow-checkout"), (shadow_checkout, {}, "shadow-checkout"),
             (real_checkout, SHADOW, "not-shadow")]
    for checkout_id, headers, slug in cases:
        for key in ("k1", "k2"):
            response = client.post(f"/checkouts/{checkout_id}/orders", json=payment_body(),
                                    headers={**headers, "Idempotency-Key": key})
            assert_problem(response, 409, slug)
    assert gateway.authorize_calls == [] and gateway.lookup_calls == []
    assert (count(db_path, "orders"), count(db_path, "idempotency_keys")) == (0, 0)
    placed = client.post(f"/checkouts/{real_checkout}/orders", json=payment_body(),
                         headers={"Idempotency-Key": "k1"})
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["id"]
    assert_problem(client.get(f"/orders/{order_id}", headers=SHADOW), 409, "not-shadow")
    assert client.get(f"/orders/{order_id}").status_code == 200
    # the real cart's events (created, item added, checkout started) and the order's
    assert count(db_path, "outbox") == 3 + 2


def test_the_background_task_expires_old_shadow_carts(
    make_server: CoreFactory, db_path: Path
) -> None:
    client, _ = make_server(shadow_ttl_seconds=1, shadow_expiry_interval_seconds=0.05)
    shadow_checkout = http_checkout(client, shadow_cart := http_cart(client, SHADOW), SHADOW)
    real_cart = http_cart(client, {})
    assert shadow_checkout
    wait_until(lambda: client.get(f"/carts/{shadow_cart}", headers=SHADOW).status_code == 404,
               10, "the shadow cart to expire")
    assert (count(db_path, "checkouts"), count(db_path, "cart_items")) == (0, 1)
    assert client.get(f"/carts/{real_cart}").status_code == 200
    metrics = client.get("/metrics").text
    assert 'checkout_core_shadow_expired_total{resource="cart"} 1.0' in metrics
    assert 'checkout_core_shadow_expired_total{resource="checkout"} 1.0' in metrics


# --- the pricing drift ----------------------------------------------------------------------


MONEY_AND_MORE = ("id", "cart_id")


def differences(before: dict[str, Any], after: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    assert before.keys() == after.keys()
    return {k: (before[k], after[k]) for k in before
            if k not in MONEY_AND_MORE and before[k] != after[k]}


def put_faults(client: httpx.Client, body: Any) -> httpx.Response:
    return client.put("/_faults", json=body)


@pytest.mark.parametrize(("drift", "sku", "tax", "drifted"), [
    ({"country": "DE", "kind": "tax_round_down"}, "AC-CASE-6", 570, 569),
    ({"country": "DE", "kind": "tax_rate_plus_100bp"}, "HW-PHONE-6", 15181, 15980),
])
def test_a_pricing_drift_changes_the_tax_and_total_of_its_country_only(
    make_server: CoreFactory, drift: dict[str, str], sku: str, tax: int, drifted: int
) -> None:
    client, _ = make_server()
    carts = {(country, headers == SHADOW): http_cart(client, headers, country, skus=(sku,))
             for country in ("DE", "FR") for headers in ({}, SHADOW)}

    def snapshot() -> dict[tuple[str, bool], dict[str, Any]]:
        return {key: client.get(f"/carts/{cart}", headers=SHADOW if key[1] else {}).json()
                for key, cart in carts.items()}

    def checkout(country: str, shadow: bool) -> dict[str, Any]:
        headers = SHADOW if shadow else {}
        cart = http_cart(client, headers, country, skus=(sku,))
        response = client.post(f"/carts/{cart}/checkout", headers=headers,
                               json={"email": "a@b.example", "shipping_address": ADDRESS_JSON})
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    plain_carts = snapshot()
    plain_checkouts = {(c, s): checkout(c, s) for c in ("DE", "FR") for s in (False, True)}
    shown = put_faults(client, {"pricing_drift": drift})
    assert shown.status_code == 200 and shown.json()["pricing_drift"] == drift
    assert client.get("/_faults").json()["pricing_drift"] == drift

    drifted_carts = snapshot()
    drifted_checkouts = {(c, s): checkout(c, s) for c in ("DE", "FR") for s in (False, True)}
    for shadow in (False, True):
        for before, after in ((plain_carts, drifted_carts),
                              (plain_checkouts, drifted_checkouts)):
            de = before[("DE", shadow)]
            assert differences(de, after[("DE", shadow)]) == {
                "tax": (tax, drifted), "total": (de["total"], de["total"] - tax + drifted)}
            assert differences(before[("FR", shadow)], after[("FR", shadow)]) == {}

    assert put_faults(client, {}).status_code == 200
    assert snapshot() == plain_carts
    # a checkout keeps the totals it was priced with
    drifted_de = drifted_checkouts[("DE", False)]
    order = client.post(f"/checkouts/{drifted_de['id']}/orders", json=payment_body(),
                        headers={"Idempotency-Key": "k1"})
    assert order.status_code == 201 and order.json()["total"] == drifted_de["total"]


@pytest.mark.parametrize(("drift", "field"), [
    ({"country": "XX", "kind": "tax_round_down"}, "pricing_drift.country"),
    ({"country": "de", "kind": "tax_round_down"}, "pricing_drift.country"),
    ({"kind": "tax_round_down"}, "pricing_drift.country"),
    ({"country": "DE", "kind": "tax_round_up"}, "pricing_drift.kind"),
    ({"country": "DE", "kind": "tax_round_down", "extra": 1}, "pricing_drift.extra"),
    ("DE", "pricing_drift"),
    ([], "pricing_drift"),
])
def test_a_bad_pricing_drift_is_422_and_changes_nothing(
    make_server: CoreFactory, drift: Any, field: str
) -> None:
    client, _ = make_server()
    good = {"country": "FR", "kind": "tax_round_down"}
    assert put_faults(client, {"pricing_drift": good}).status_code == 200
    response = put_faults(client, {"pricing_drift": drift, "error_rate": 0.5})
    assert response.status_code == 422, response.text
    assert response.json()["type"].endswith("/validation-error")
    assert field in [error["field"] for error in response.json()["errors"]]
    assert client.get("/_faults").json()["pricing_drift"] == good
    assert client.get("/_faults").json()["error_rate"] == 0.0
