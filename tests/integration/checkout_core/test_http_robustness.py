"""Nothing a client sends causes a 500: random JSON, odd headers and oversized bodies get 4xx
problem+json (in-process through ASGI, so hypothesis can send many requests fast)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkout_core.config import CoreSettings
from checkout_core.main import create_app

from .conftest import FAST

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["sku", "quantity", "country", "currency", "email",
                                       "shipping_address", "promotion_code", "payment",
                                       "token", "method", "name"]) | st.text(max_size=5),
                      children, max_size=5),
    max_leaves=12,
)


class Api:
    def __init__(self, settings_: CoreSettings) -> None:
        self.app = create_app(settings_)
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                        base_url="http://core")
        cart = self.send("POST", "/carts", {"country": "DE", "currency": "EUR"}).json()
        self.cart_id = cart["id"]
        self.send("POST", f"/carts/{self.cart_id}/items", {"sku": "AC-CASE-6", "quantity": 1})
        other = self.send("POST", "/carts", {"country": "DE", "currency": "EUR"}).json()["id"]
        self.send("POST", f"/carts/{other}/items", {"sku": "AC-CASE-6", "quantity": 1})
        address = {"name": "A", "line1": "B", "city": "C", "postal_code": "D", "country": "DE"}
        self.checkout_id = self.send("POST", f"/carts/{other}/checkout",
                                     {"email": "a@b.example", "shipping_address": address}
                                     ).json()["id"]

    def send(self, method: str, path: str, body: Any = None, content: bytes | None = None,
             headers: dict[str, str] | None = None) -> httpx.Response:
        payload = content if content is not None else json.dumps(body).encode()
        return self.loop.run_until_complete(
            self.client.request(method, path, content=payload, headers=headers))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(self.app.state.core.stop())
        self.loop.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    a = Api(CoreSettings(db_path=tmp_path_factory.mktemp("fuzz") / "core.sqlite3", **FAST))
    yield a
    a.close()


def assert_client_error(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500 or response.status_code in (200, 201), \
        (response.status_code, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_values, target=st.sampled_from(["create", "add", "patch", "checkout", "order"]))
def test_random_json_bodies_never_cause_a_server_error(api: Api, body: Any, target: str) -> None:
    paths = {
        "create": ("POST", "/carts"),
        "add": ("POST", f"/carts/{api.cart_id}/items"),
        "patch": ("PATCH", f"/carts/{api.cart_id}/items/AC-CASE-6"),
        "checkout": ("POST", "/carts/co_cart_missing/checkout"),
        "order": ("POST", f"/checkouts/{api.checkout_id}/orders"),
    }
    method, path = paths[target]
    headers = {"Idempotency-Key": "fuzz-" + json.dumps(body)[:200]} if target == "order" else None
    assert_client_error(api.send(method, path, body, headers=headers))


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b"[" * 30_000 + b"]" * 30_000, 400),
        (b'{"sku": "AC-CASE-6", "quantity": 100000000000000000000000000}', 422),
        (b'{"sku": "\\ud800", "quantity": 1}', 422),
        (b"x" * (64 * 1024 + 1), 413),
        (b"null", 422),
    ],
)
def test_hostile_bodies_are_client_errors(api: Api, content: bytes, status: int) -> None:
    response = api.send("POST", f"/carts/{api.cart_id}/items", content=content)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "path",
    ["/carts/%00", "/carts/" + "x" * 5000, "/orders/co_ord_%F0%9F%92%A9", "/checkouts/x/orders"],
)
def test_odd_paths_are_client_errors(api: Api, path: str) -> None:
    assert_client_error(api.send("GET", path, content=b""))
