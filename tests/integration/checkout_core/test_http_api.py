"""The core's HTTP API on a real server: contract bodies, problem+json errors, headers, ops."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from checkout_core.config import CoreSettings
from checkout_core.main import create_app
from tests.support.servers import serve

from .conftest import FAST, SettingsFactory
from .helpers import ADDRESS_JSON, http_checkout, payment_body, wait_until

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """One server for the module: every test makes its own carts, so they stay independent."""
    settings = CoreSettings(db_path=tmp_path_factory.mktemp("http") / "core.sqlite3", **FAST)
    with serve(create_app(settings)) as server, \
            httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


def new_cart(client: httpx.Client, country: str = "DE", currency: str = "EUR") -> str:
    response = client.post("/carts", json={"country": country, "currency": currency})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def assert_problem(response: httpx.Response, status: int, slug: str | None = None,
                   fields: list[str] | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.headers["x-backend-name"] == "core"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["instance"] == response.request.url.path
    if slug is not None:
        assert body["type"] == f"https://checkout.example/problems/{slug}"
    if fields is not None:
        assert [e["field"] for e in body["errors"]] == fields
    return body


def test_multi_item_cart_walkthrough(client: httpx.Client) -> None:
    cart_id = new_cart(client)
    assert cart_id.startswith("co_cart_")
    client.post(f"/carts/{cart_id}/items", json={"sku": "HW-PHONE-6", "quantity": 1})
    client.post(f"/carts/{cart_id}/items", json={"sku": "AC-CASE-6", "quantity": 3})
    added = client.post(f"/carts/{cart_id}/items", json={"sku": "HW-PHONE-6", "quantity": 1})
    assert added.status_code == 201
    assert [(i["sku"], i["quantity"]) for i in added.json()["items"]] == \
        [("HW-PHONE-6", 2), ("AC-CASE-6", 3)]
    changed = client.patch(f"/carts/{cart_id}/items/AC-CASE-6", json={"quantity": 1})
    assert changed.status_code == 200 and changed.json()["subtotal"] == 159800 + 2999
    removed = client.delete(f"/carts/{cart_id}/items/AC-CASE-6")
    assert removed.status_code == 200
    assert removed.json() == client.get(f"/carts/{cart_id}").json()
    assert removed.json() | {"id": None} == {
        "id": None, "country": "DE", "currency": "EUR", "status": "open",
        "items": [{"sku": "HW-PHONE-6", "name": 'Phone 6.1"', "quantity": 2,
                   "unit_price": 79900, "line_total": 159800}],
        "subtotal": 159800, "tax": 30362, "total": 190162,
    }


def test_checkout_and_order_bodies_follow_the_contract(client: httpx.Client) -> None:
    cart_id = new_cart(client)
    client.post(f"/carts/{cart_id}/items", json={"sku": "HW-PHONE-6", "quantity": 2})
    response = client.post(f"/carts/{cart_id}/checkout", json={
        "email": "a@b.example", "shipping_address": ADDRESS_JSON, "promotion_code": "WELCOME10"})
    assert response.status_code == 201
    checkout = response.json()
    assert checkout["id"].startswith("co_chk_")
    assert {k: checkout[k] for k in ("status", "subtotal", "discount", "tax", "total")} == \
        {"status": "open", "subtotal": 159800, "discount": 15980, "tax": 27326, "total": 171146}
    assert client.get(f"/carts/{cart_id}").json()["status"] == "checked_out"
    placed = client.post(f"/checkouts/{checkout['id']}/orders", json=payment_body(),
                         headers={"Idempotency-Key": "k-1"})
    assert placed.status_code == 201
    order = placed.json()
    assert set(order) == {"id", "checkout_id", "status", "currency", "total", "items", "email",
                          "payment", "created_at"}
    assert order["id"].startswith("co_ord_") and order["status"] == "placed"
    assert order["payment"]["amount"] == order["total"] == 171146
    assert order["created_at"].endswith("Z")
    assert client.get(f"/orders/{order['id']}").json() == order


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"country": "XX", "currency": "EUR"}, ["country"]),
        ({"country": "DE", "currency": "USD"}, ["currency"]),
        ({"country": "DE"}, ["currency"]),
        ({"country": 1, "currency": "EUR"}, ["country"]),
    ],
)
def test_create_cart_validation(client: httpx.Client, body: dict[str, Any],
                                fields: list[str]) -> None:
    assert_problem(client.post("/carts", json=body), 422, "validation-error", fields)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"sku": "NOPE", "quantity": 1}, ["sku"]),
        ({"sku": "HW-PHONE-6", "quantity": 0}, ["quantity"]),
        ({"sku": "HW-PHONE-6", "quantity": 100}, ["quantity"]),
        ({"sku": "HW-PHONE-6", "quantity": "1"}, ["quantity"]),
        ({"sku": "HW-PHONE-6", "quantity": 2.5}, ["quantity"]),
        ({"sku": "HW-PHONE-6"}, ["quantity"]),
        ([1, 2], ["body"]),
    ],
)
def test_add_item_validation(client: httpx.Client, body: Any, fields: list[str]) -> None:
    cart_id = new_cart(client)
    assert_problem(client.post(f"/carts/{cart_id}/items", json=body), 422, None, fields)


@pytest.mark.parametrize(
    ("body", "status", "slug", "fields"),
    [
        ({"email": "nope", "shipping_address": ADDRESS_JSON}, 422, "validation-error", ["email"]),
        ({"email": "a@b.example", "shipping_address": ADDRESS_JSON, "promotion_code": "FREE"},
         422, "validation-error", ["promotion_code"]),
        ({"email": "a@b.example", "shipping_address": ADDRESS_JSON, "promotion_code": "SAVE20"},
         422, "validation-error", ["promotion_code"]),
        ({"email": "a@b.example", "shipping_address": {**ADDRESS_JSON, "city": ""}},
         422, "validation-error", ["shipping_address.city"]),
        ({"email": "a@b.example"}, 422, "validation-error", ["shipping_address"]),
    ],
)
def test_checkout_validation(client: httpx.Client, body: dict[str, Any], status: int, slug: str,
                             fields: list[str]) -> None:
    cart_id = new_cart(client)
    client.post(f"/carts/{cart_id}/items", json={"sku": "AC-CASE-6", "quantity": 1})
    assert_problem(client.post(f"/carts/{cart_id}/checkout", json=body), status, slug, fields)


def test_conflicts_and_not_found(client: httpx.Client) -> None:
    empty = new_cart(client)
    body = {"email": "a@b.example", "shipping_address": ADDRESS_JSON}
    assert_problem(client.post(f"/carts/{empty}/checkout", json=body), 409, "cart-empty")
    checkout_id = http_checkout(client)
    cart_id = client.get(f"/carts/{empty}").json()["id"]
    assert cart_id == empty
    paid = client.post(f"/checkouts/{checkout_id}/orders", json=payment_body(),
                       headers={"Idempotency-Key": "a"})
    assert paid.status_code == 201
    again = client.post(f"/checkouts/{checkout_id}/orders", json=payment_body(),
                        headers={"Idempotency-Key": "b"})
    assert_problem(again, 409, "checkout-completed")
    for path in ("/carts/co_cart_nope", "/orders/co_ord_nope", "/nowhere"):
        assert_problem(client.get(path), 404, "not-found")
    assert_problem(client.patch(f"/carts/{empty}/items/HW-PHONE-6", json={"quantity": 1}), 404)
    assert_problem(client.delete(f"/carts/{empty}/items/HW-PHONE-6"), 404)
    assert_problem(client.put("/carts"), 405, "method-not-allowed")


def test_a_checked_out_cart_is_a_conflict(client: httpx.Client) -> None:
    cart_id = new_cart(client)
    client.post(f"/carts/{cart_id}/items", json={"sku": "AC-CASE-6", "quantity": 1})
    body = {"email": "a@b.example", "shipping_address": ADDRESS_JSON}
    assert client.post(f"/carts/{cart_id}/checkout", json=body).status_code == 201
    item = {"sku": "AC-CASE-6", "quantity": 1}
    assert_problem(client.post(f"/carts/{cart_id}/items", json=item), 409, "cart-not-open")
    assert_problem(client.post(f"/carts/{cart_id}/checkout", json=body), 409, "cart-not-open")


@pytest.mark.parametrize(
    "send",
    [
        lambda c: c.post("/carts", content=b"{oops"),
        lambda c: c.post("/carts", content=b""),
        lambda c: c.post("/carts/co_cart_x/items", content=b"\xff"),
    ],
)
def test_malformed_json_is_400(client: httpx.Client,
                               send: Callable[[httpx.Client], httpx.Response]) -> None:
    assert_problem(send(client), 400, "malformed-json")


def test_idempotency_key_rules(client: httpx.Client) -> None:
    checkout_id = http_checkout(client)
    url = f"/checkouts/{checkout_id}/orders"
    assert_problem(client.post(url, json=payment_body()), 400, "idempotency-key-missing")
    assert_problem(client.post(url, json=payment_body(), headers={"Idempotency-Key": "x" * 256}),
                   400, "idempotency-key-invalid")
    first = client.post(url, json=payment_body(), headers={"Idempotency-Key": "k"})
    replay = client.post(url, json=payment_body(), headers={"Idempotency-Key": "k"})
    assert (replay.status_code, replay.json()) == (first.status_code, first.json())
    reuse = client.post(url, json=payment_body("tok_other"), headers={"Idempotency-Key": "k"})
    assert_problem(reuse, 409, "idempotency-key-reuse")


def test_a_decline_is_402_replayed_and_the_checkout_stays_open(client: httpx.Client) -> None:
    url = f"/checkouts/{http_checkout(client)}/orders"
    declined = client.post(url, json=payment_body("tok_decline"),
                           headers={"Idempotency-Key": "d"})
    assert_problem(declined, 402, "payment-declined")
    again = client.post(url, json=payment_body("tok_decline"), headers={"Idempotency-Key": "d"})
    assert (again.status_code, again.json()) == (402, declined.json())
    ok = client.post(url, json=payment_body(), headers={"Idempotency-Key": "e"})
    assert ok.status_code == 201


def test_every_response_names_the_backend(client: httpx.Client) -> None:
    for response in (client.get("/healthz"), client.get("/metrics"), client.get("/readyz"),
                     client.get("/nowhere"), client.post("/carts", json={}),
                     client.get("/_downstream/orders")):
        assert response.headers["x-backend-name"] == "core"


def test_ops_endpoints(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "backend": "core"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "relay": "running", "consumer": "running"}
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in ("checkout_core_outbox_lag_events", "checkout_core_consumer_lag_messages",
                 "checkout_core_dlq_size"):
        assert name in metrics.text


def test_a_placed_order_reaches_the_mounted_fake_downstream(
    make_settings: SettingsFactory,
) -> None:
    with serve(create_app(make_settings())) as server, httpx.Client(base_url=server.url) as client:
        checkout_id = http_checkout(client)
        order = client.post(f"/checkouts/{checkout_id}/orders", json=payment_body(),
                            headers={"Idempotency-Key": "sync"}).json()

        def arrived() -> bool:
            orders = client.get("/_downstream/orders").json()["orders"]
            return [o["order_id"] for o in orders] == [order["id"]]

        wait_until(arrived, 5, message="the order at the downstream")
        # the consumer counts a delivery once the downstream has answered: poll for it too
        wait_until(lambda: 'outcome="delivered"} 1.0' in client.get("/metrics").text, 5,
                   message="the delivery counted")
        assert_metrics(client.get("/metrics").text)


def assert_metrics(metrics: str) -> None:
    assert 'checkout_core_orders_placed_total{currency="EUR"} 1.0' in metrics
    assert 'checkout_core_payment_outcomes_total{outcome="authorized"} 1.0' in metrics
    assert 'outcome="delivered"} 1.0' in metrics


def test_openapi_is_served_from_the_file_when_it_exists(client: httpx.Client) -> None:
    from checkout_core.web.ops import OPENAPI_PATH

    response = client.get("/openapi.yaml")
    if OPENAPI_PATH.exists():
        assert response.status_code == 200
        assert response.text == OPENAPI_PATH.read_text("utf-8")
        assert response.headers["content-type"].startswith("application/yaml")
    else:
        assert_problem(response, 404, "not-found")


def test_each_app_has_its_own_metrics_registry(make_settings: SettingsFactory) -> None:
    first, second = create_app(make_settings()), create_app(make_settings())
    assert first.state.core.metrics.registry is not second.state.core.metrics.registry
