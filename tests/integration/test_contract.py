"""The checkout HTTP contract (docs/contract.md), run against both backends over real HTTP.

Every test runs once per backend ("legacy" and "core"); see tests/support/checkout_contract.py
for the client, the factories and `assert_problem`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import yaml

from tests.support.checkout_contract import (
    ADDRESS,
    DECLINE,
    MARKETS,
    VISA,
    Backend,
    Items,
    assert_problem,
    new_key,
    post_concurrently,
    running_backend,
)


@pytest.fixture(scope="module", params=["legacy", "core"])
def backend(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    name: str = request.param
    with running_backend(name, tmp_path_factory.mktemp(name)) as client:
        yield client


# carts


@pytest.mark.parametrize(("country", "currency"), MARKETS)
def test_a_new_cart_is_open_empty_and_owned_by_the_backend(
    backend: Backend, country: str, currency: str
) -> None:
    cart = backend.cart(country, currency)
    assert cart["id"].startswith(f"{backend.prefix}cart_")
    assert {k: v for k, v in cart.items() if k != "id"} == {
        "country": country, "currency": currency, "status": "open", "items": [],
        "subtotal": 0, "tax": 0, "total": 0,
    }
    assert backend.http.get(f"/carts/{cart['id']}").json() == cart


@pytest.mark.parametrize(("body", "field"), [
    ({"country": "XX", "currency": "EUR"}, "country"),
    ({"country": "de", "currency": "EUR"}, "country"),
    ({"country": 49, "currency": "EUR"}, "country"),
    ({"currency": "EUR"}, "country"),
    ({"country": "DE", "currency": "USD"}, "currency"),
    ({"country": "SE", "currency": "GBP"}, "currency"),
    ({"country": "US", "currency": "EUR"}, "currency"),
    ({"country": "DE"}, "currency"),
])
def test_carts_only_open_in_a_known_country_and_its_currency(
    backend: Backend, body: dict[str, Any], field: str
) -> None:
    assert_problem(backend.http.post("/carts", json=body), 422, field=field)


def test_adding_items_prices_each_line_and_the_cart(backend: Backend) -> None:
    cart = backend.cart(items=[("HW-PHONE-6", 2)])
    assert cart["items"] == [{"sku": "HW-PHONE-6", "name": 'Phone 6.1"', "quantity": 2,
                              "unit_price": 79900, "line_total": 159800}]
    assert (cart["subtotal"], cart["tax"], cart["total"]) == (159800, 30362, 190162)
    assert backend.http.get(f"/carts/{cart['id']}").json() == cart


def test_adding_a_sku_again_adds_to_its_quantity_and_keeps_its_place(backend: Backend) -> None:
    cart = backend.cart(items=[("AC-CASE-6", 2), ("WR-CARE-2Y", 1), ("AC-CASE-6", 3)])
    assert [(i["sku"], i["quantity"], i["line_total"]) for i in cart["items"]] == [
        ("AC-CASE-6", 5, 14995), ("WR-CARE-2Y", 1, 14900)]
    assert cart["subtotal"] == 29895


def test_patch_sets_and_delete_removes_a_line(backend: Backend) -> None:
    cart = backend.cart(items=[("AC-CASE-6", 2), ("SB-CLOUD-1M", 1)])
    patched = backend.http.patch(f"/carts/{cart['id']}/items/AC-CASE-6", json={"quantity": 7})
    assert patched.status_code == 200, patched.text
    assert [(i["sku"], i["quantity"]) for i in patched.json()["items"]] == [
        ("AC-CASE-6", 7), ("SB-CLOUD-1M", 1)]
    assert patched.json()["subtotal"] == 7 * 2999 + 999
    deleted = backend.http.delete(f"/carts/{cart['id']}/items/AC-CASE-6")
    assert deleted.status_code == 200, deleted.text
    assert [i["sku"] for i in deleted.json()["items"]] == ["SB-CLOUD-1M"]
    assert (deleted.json()["subtotal"], deleted.json()["tax"]) == (999, 190)


def test_a_merged_quantity_above_99_is_refused_and_the_cart_is_unchanged(
    backend: Backend
) -> None:
    cart = backend.cart(items=[("AC-CASE-6", 60)])
    refused = backend.http.post(f"/carts/{cart['id']}/items",
                                json={"sku": "AC-CASE-6", "quantity": 40})
    assert_problem(refused, 422, field="quantity")
    assert backend.http.get(f"/carts/{cart['id']}").json() == cart


BAD_ITEMS = [
    ({"sku": "AC-CASE-6", "quantity": 0}, "quantity"),
    ({"sku": "AC-CASE-6", "quantity": -1}, "quantity"),
    ({"sku": "AC-CASE-6", "quantity": 100}, "quantity"),
    ({"sku": "AC-CASE-6", "quantity": "2"}, "quantity"),
    ({"sku": "AC-CASE-6", "quantity": 2.5}, "quantity"),
    ({"sku": "AC-CASE-6", "quantity": True}, "quantity"),
    ({"sku": "AC-CASE-6", "quantity": None}, "quantity"),
    ({"sku": "AC-CASE-6"}, "quantity"),
    ({"sku": "NO-SUCH-SKU", "quantity": 1}, "sku"),
    ({"sku": 7, "quantity": 1}, "sku"),
    ({"quantity": 1}, "sku"),
]


@pytest.mark.parametrize(("body", "field"), BAD_ITEMS)
def test_invalid_items_are_refused_with_the_field(
    backend: Backend, body: dict[str, Any], field: str
) -> None:
    cart = backend.cart()
    assert_problem(backend.http.post(f"/carts/{cart['id']}/items", json=body), 422, field=field)


@pytest.mark.parametrize("quantity", [0, 100, -3, "3", 1.5, None])
def test_patch_refuses_quantities_outside_1_to_99(backend: Backend, quantity: Any) -> None:
    cart = backend.cart(items=[("AC-CASE-6", 1)])
    response = backend.http.patch(f"/carts/{cart['id']}/items/AC-CASE-6",
                                  json={"quantity": quantity})
    assert_problem(response, 422, field="quantity")


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
@pytest.mark.parametrize("sku", ["WR-CARE-2Y", "NO-SUCH-SKU"])
def test_changing_a_sku_not_in_the_cart_is_404(backend: Backend, method: str, sku: str) -> None:
    cart = backend.cart(items=[("AC-CASE-6", 1)])
    body = {"quantity": 2} if method == "PATCH" else None
    response = backend.http.request(method, f"/carts/{cart['id']}/items/{sku}", json=body)
    assert_problem(response, 404)


def test_a_checked_out_cart_is_closed_to_changes(backend: Backend) -> None:
    checkout = backend.checkout(items=[("AC-CASE-6", 1)])
    cart_url = f"/carts/{checkout['cart_id']}"
    assert backend.http.get(cart_url).json()["status"] == "checked_out"
    attempts = [
        backend.http.post(f"{cart_url}/items", json={"sku": "AC-CASE-6", "quantity": 1}),
        backend.http.patch(f"{cart_url}/items/AC-CASE-6", json={"quantity": 2}),
        backend.http.delete(f"{cart_url}/items/AC-CASE-6"),
        backend.start_checkout(checkout["cart_id"]),
    ]
    for response in attempts:
        assert_problem(response, 409)


# checkouts and pricing

PRICING = [  # country, currency, items, promotion, subtotal, discount, tax, total
    ("DE", "EUR", [("HW-PHONE-6", 2)], None, 159800, 0, 30362, 190162),
    ("DE", "EUR", [("HW-PHONE-6", 2)], "WELCOME10", 159800, 15980, 27326, 171146),
    ("FR", "EUR", [("AC-CASE-6", 1), ("AC-CHARGER-65", 1)], "WELCOME10", 7998, 799, 1440, 8639),
    ("NL", "EUR", [("WR-CARE-2Y", 1)], "SAVE20", 14900, 2000, 2709, 15609),
    ("IE", "EUR", [("HW-LAPTOP-14", 1)], "BIGSPENDER", 129900, 19485, 25395, 135810),
    ("PT", "EUR", [("AC-CHARGER-65", 1)], None, 4999, 0, 1150, 6149),
    ("FI", "EUR", [("SB-CLOUD-1M", 1)], "WELCOME10", 999, 99, 230, 1130),
    ("SE", "SEK", [("SB-CLOUD-1M", 3)], "WELCOME10", 32700, 3270, 7358, 36788),
    ("SE", "SEK", [("HW-LAPTOP-14", 1)], "SAVE20", 1499900, 2000, 374475, 1872375),
    ("SE", "EUR", [("AC-CASE-6", 1)], None, 2999, 0, 750, 3749),
    ("GB", "GBP", [("WR-CARE-3Y", 2)], "SAVE20", 35800, 2000, 6760, 40560),
    ("US", "USD", [("HW-LAPTOP-14", 1), ("AC-CASE-6", 2)], "BIGSPENDER",
     146498, 21974, 0, 124524),
    ("DE", "EUR", [("SB-CLOUD-1M", 50)], None, 49950, 0, 9491, 59441),
]


@pytest.mark.parametrize(
    ("country", "currency", "items", "code", "subtotal", "discount", "tax", "total"), PRICING)
def test_checkout_totals_follow_the_pricing_rules(
    backend: Backend, country: str, currency: str, items: Items, code: str | None,
    subtotal: int, discount: int, tax: int, total: int,
) -> None:
    extra = {} if code is None else {"promotion_code": code}
    checkout = backend.checkout(items, country, currency, **extra)
    assert checkout["promotion_code"] == code
    assert (checkout["subtotal"], checkout["discount"], checkout["tax"], checkout["total"]) == (
        subtotal, discount, tax, total)
    assert (checkout["country"], checkout["currency"]) == (country, currency)


def test_a_checkout_snapshots_the_cart_and_the_buyer(backend: Backend) -> None:
    cart = backend.cart(items=[("HW-PHONE-6", 2), ("AC-CASE-6", 1)])
    response = backend.start_checkout(cart["id"], promotion_code="WELCOME10")
    assert response.status_code == 201, response.text
    checkout = response.json()
    assert checkout["id"].startswith(f"{backend.prefix}chk_")
    assert (checkout["cart_id"], checkout["status"], checkout["email"]) == (
        cart["id"], "open", "a@b.example")
    assert checkout["items"] == cart["items"]
    assert {k: checkout["shipping_address"][k] for k in ADDRESS} == ADDRESS


def test_promotion_codes_match_without_regard_to_case(backend: Backend) -> None:
    checkout = backend.checkout(promotion_code="welcome10")
    assert (checkout["promotion_code"], checkout["discount"]) == ("WELCOME10", 7990)


@pytest.mark.parametrize(("items", "code"), [
    ([("AC-CASE-6", 1)], "SAVE20"),
    ([("HW-PHONE-6", 1)], "BIGSPENDER"),
    ([("HW-PHONE-6", 1)], "NOPE"),
    ([("HW-PHONE-6", 1)], ""),
    ([("HW-PHONE-6", 1)], 10),
])
def test_unknown_or_unmet_promotions_are_refused(backend: Backend, items: Items,
                                                 code: Any) -> None:
    cart = backend.cart(items=items)
    response = backend.start_checkout(cart["id"], promotion_code=code)
    assert_problem(response, 422, field="promotion_code")
    assert backend.http.get(f"/carts/{cart['id']}").json()["status"] == "open"


@pytest.mark.parametrize(("overrides", "field"), [
    ({"email": "not-an-email"}, "email"),
    ({"email": "a@b"}, "email"),
    ({"email": ""}, "email"),
    ({"email": 42}, "email"),
    ({"email": None}, "email"),
    ({"shipping_address": None}, "shipping_address"),
    ({"shipping_address": "Hauptstr. 1"}, "shipping_address"),
    ({"shipping_address": {k: v for k, v in ADDRESS.items() if k != "city"}},
     "shipping_address.city"),
    ({"shipping_address": {**ADDRESS, "line1": ""}}, "shipping_address.line1"),
])
def test_invalid_checkout_details_are_refused_with_the_field(
    backend: Backend, overrides: dict[str, Any], field: str
) -> None:
    cart = backend.cart(items=[("AC-CASE-6", 1)])
    assert_problem(backend.start_checkout(cart["id"], **overrides), 422, field=field)


def test_an_empty_cart_cannot_check_out(backend: Backend) -> None:
    assert_problem(backend.start_checkout(backend.cart()["id"]), 409)


# orders


def test_placing_an_order_pays_the_checkout_total(backend: Backend) -> None:
    checkout = backend.checkout(items=[("HW-PHONE-6", 2)], promotion_code="WELCOME10")
    response = backend.order(checkout["id"])
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["id"].startswith(f"{backend.prefix}ord_")
    assert {k: order[k] for k in ("checkout_id", "status", "currency", "total", "items",
                                  "email")} == {
        "checkout_id": checkout["id"], "status": "placed", "currency": "EUR",
        "total": 171146, "items": checkout["items"], "email": "a@b.example"}
    assert order["payment"]["id"].startswith("pay_")
    assert (order["payment"]["status"], order["payment"]["amount"]) == ("authorized", 171146)
    assert order["created_at"].endswith("Z")
    assert datetime.fromisoformat(order["created_at"]).tzinfo is not None
    fetched = backend.http.get(f"/orders/{order['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == order


def test_the_same_key_and_body_replay_the_first_response(backend: Backend) -> None:
    checkout, key = backend.checkout(), new_key()
    first, again = backend.order(checkout["id"], key=key), backend.order(checkout["id"], key=key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()


@pytest.mark.parametrize("other", [
    {"payment": {"method": "card", "token": "tok_mastercard"}},
    {"payment": {"method": "card", "token": "tok_decline"}},
])
def test_the_same_key_with_another_body_is_409(backend: Backend, other: dict[str, Any]) -> None:
    checkout, key = backend.checkout(), new_key()
    assert backend.order(checkout["id"], key=key).status_code == 201
    assert_problem(backend.order(checkout["id"], other, key=key), 409, "idempotency-key-reuse")


def test_a_key_cannot_be_reused_for_another_checkout(backend: Backend) -> None:
    first, second, key = backend.checkout(), backend.checkout(), new_key()
    assert backend.order(first["id"], key=key).status_code == 201
    assert_problem(backend.order(second["id"], key=key), 409, "idempotency-key-reuse")
    assert backend.order(second["id"]).status_code == 201


@pytest.mark.parametrize("key", [None, "", "k" * 256, "caf\xe9"])
def test_a_missing_or_malformed_key_is_400(backend: Backend, key: str | None) -> None:
    checkout = backend.checkout()
    headers = {} if key is None else {b"Idempotency-Key": key.encode("latin-1")}
    response = backend.http.post(f"/checkouts/{checkout['id']}/orders", json=VISA,
                                 headers=headers)
    assert_problem(response, 400)
    assert backend.order(checkout["id"]).status_code == 201


@pytest.mark.parametrize(("body", "field"), [
    ({}, "payment"),
    ({"payment": None}, "payment"),
    ({"payment": {"method": "cash", "token": "tok_visa"}}, "payment.method"),
    ({"payment": {"token": "tok_visa"}}, "payment.method"),
    ({"payment": {"method": "card"}}, "payment.token"),
    ({"payment": {"method": "card", "token": "visa"}}, "payment.token"),
    ({"payment": {"method": "card", "token": 4242}}, "payment.token"),
])
def test_invalid_payments_are_refused_with_the_field(
    backend: Backend, body: dict[str, Any], field: str
) -> None:
    checkout = backend.checkout()
    assert_problem(backend.order(checkout["id"], body), 422, field=field)
    assert backend.order(checkout["id"]).status_code == 201


def test_a_declined_payment_is_402_and_the_checkout_stays_open(backend: Backend) -> None:
    checkout, key = backend.checkout(), new_key()
    declined = assert_problem(backend.order(checkout["id"], DECLINE, key=key), 402,
                              "payment-declined")
    replay = backend.order(checkout["id"], DECLINE, key=key)
    assert (replay.status_code, replay.json()) == (402, declined)
    assert backend.order(checkout["id"]).status_code == 201


def test_a_checkout_with_an_order_refuses_another(backend: Backend) -> None:
    checkout = backend.checkout()
    assert backend.order(checkout["id"]).status_code == 201
    assert_problem(backend.order(checkout["id"]), 409, "checkout-completed")


def test_concurrent_requests_with_one_key_place_exactly_one_order(backend: Backend) -> None:
    checkout = backend.checkout()
    url = f"{backend.url}/checkouts/{checkout['id']}/orders"
    responses = post_concurrently(url, [new_key()] * 8)
    assert {r.status_code for r in responses} <= {201, 409}
    placed = [r.json() for r in responses if r.status_code == 201]
    assert placed, [r.text for r in responses]
    assert len({order["id"] for order in placed}) == 1
    assert all(order == placed[0] for order in placed)


def test_concurrent_requests_with_different_keys_place_exactly_one_order(
    backend: Backend
) -> None:
    checkout = backend.checkout()
    url = f"{backend.url}/checkouts/{checkout['id']}/orders"
    responses = post_concurrently(url, [new_key() for _ in range(8)])
    assert sorted(r.status_code for r in responses) == [201] + [409] * 7


# across routes


def _unknown_id_requests(prefix: str) -> list[tuple[str, str, Any]]:
    cart, chk, order = f"{prefix}cart_0000", f"{prefix}chk_0000", f"{prefix}ord_0000"
    return [
        ("GET", f"/carts/{cart}", None),
        ("POST", f"/carts/{cart}/items", {"sku": "AC-CASE-6", "quantity": 1}),
        ("PATCH", f"/carts/{cart}/items/AC-CASE-6", {"quantity": 1}),
        ("DELETE", f"/carts/{cart}/items/AC-CASE-6", None),
        ("POST", f"/carts/{cart}/checkout", {"email": "a@b.example", "shipping_address": ADDRESS}),
        ("POST", f"/checkouts/{chk}/orders", VISA),
        ("GET", f"/orders/{order}", None),
    ]


@pytest.mark.parametrize("index", range(7))
@pytest.mark.parametrize("foreign", [False, True])
def test_unknown_ids_are_404(backend: Backend, index: int, foreign: bool) -> None:
    prefix = "zz_" if foreign else backend.prefix
    method, path, body = _unknown_id_requests(prefix)[index]
    response = backend.http.request(method, path, json=body,
                                    headers={"Idempotency-Key": new_key()})
    assert_problem(response, 404)


BODY_ROUTES = [("POST", "/carts"), ("POST", "/carts/{cart}/items"),
               ("PATCH", "/carts/{cart}/items/AC-CASE-6"), ("POST", "/carts/{cart}/checkout"),
               ("POST", "/checkouts/{checkout}/orders")]
NOT_JSON = {"truncated": b'{"country": "DE",', "empty": b"", "text": b"not json",
            "bad-utf8": b"\xc3\x28"}
NOT_AN_OBJECT = {"array": b"[1, 2]", "string": b'"DE"', "number": b"7", "null": b"null"}


def _send_raw(backend: Backend, method: str, route: str, content: bytes) -> httpx.Response:
    checkout = backend.checkout(items=[("AC-CASE-6", 1)])
    fresh = backend.cart(items=[("AC-CASE-6", 1)])
    path = route.format(cart=fresh["id"], checkout=checkout["id"])
    return backend.http.request(method, path, content=content, headers={
        "Content-Type": "application/json", "Idempotency-Key": new_key()})


@pytest.mark.parametrize(("method", "route"), BODY_ROUTES)
@pytest.mark.parametrize("content", NOT_JSON.values(), ids=NOT_JSON.keys())
def test_a_body_that_is_not_json_is_400(
    backend: Backend, method: str, route: str, content: bytes
) -> None:
    assert_problem(_send_raw(backend, method, route, content), 400)


@pytest.mark.parametrize(("method", "route"), BODY_ROUTES)
@pytest.mark.parametrize("content", NOT_AN_OBJECT.values(), ids=NOT_AN_OBJECT.keys())
def test_json_that_is_not_an_object_is_422_on_the_body(
    backend: Backend, method: str, route: str, content: bytes
) -> None:
    assert_problem(_send_raw(backend, method, route, content), 422, field="body")


def test_healthz_names_the_backend(backend: Backend) -> None:
    response = backend.http.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok",
                                                              "backend": backend.name})


def test_the_openapi_document_is_served(backend: Backend) -> None:
    response = backend.http.get("/openapi.yaml")
    assert response.status_code == 200
    spec = yaml.safe_load(response.text)
    assert spec["openapi"].startswith("3.1")
    assert {"/carts", "/checkouts/{checkout_id}/orders", "/healthz"} <= spec["paths"].keys()


def test_ids_are_unique(backend: Backend) -> None:
    ids = [backend.cart()["id"] for _ in range(20)]
    assert len(set(ids)) == len(ids)
