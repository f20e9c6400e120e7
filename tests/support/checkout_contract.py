"""The client side of the checkout contract suite: backends, factories and assertions.

`running_backend("legacy" | "core", workdir)` serves a backend on a loopback port and yields
a `Backend`: an httpx client that checks `X-Backend-Name` on every response, plus factories
for carts, checkouts and orders. The core is imported lazily, so the legacy half runs even
while checkout_core is incomplete.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from legacy_stub.app import create_app as create_legacy_app
from legacy_stub.config import LegacySettings
from tests.support.servers import serve

PROBLEM = "https://checkout.example/problems/"
PREFIXES = {"legacy": "lg_", "core": "co_"}
ADDRESS = {"name": "Ada Lovelace", "line1": "Hauptstr. 1", "city": "Berlin",
           "postal_code": "10115", "country": "DE"}
VISA = {"payment": {"method": "card", "token": "tok_visa"}}
DECLINE = {"payment": {"method": "card", "token": "tok_decline"}}
MARKETS = [("DE", "EUR"), ("FR", "EUR"), ("NL", "EUR"), ("IE", "EUR"), ("PT", "EUR"),
           ("FI", "EUR"), ("SE", "SEK"), ("SE", "EUR"), ("GB", "GBP"), ("US", "USD")]
Items = Sequence[tuple[str, int]]


def legacy_app(workdir: Path) -> Any:
    return create_legacy_app(LegacySettings(
        latency_ms=0, latency_jitter_ms=0, error_rate=0.0, decline_rate=0.0, seed=1
    ))


def core_app(workdir: Path) -> Any:
    """The checkout core on a fresh SQLite file; imported here so legacy runs without it."""
    from checkout_core.config import CoreSettings
    from checkout_core.main import create_app

    return create_app(CoreSettings(
        db_path=workdir / "core.sqlite3", gateway_latency_ms=0, gateway_decline_rate=0.0,
        gateway_timeout_rate=0.0, gateway_unknown_rate=0.0,
    ))


@dataclass
class Backend:
    name: str
    url: str
    http: httpx.Client

    @property
    def prefix(self) -> str:
        return PREFIXES[self.name]

    def cart(self, country: str = "DE", currency: str = "EUR", items: Items = ()) -> dict[str, Any]:
        response = self.http.post("/carts", json={"country": country, "currency": currency})
        assert response.status_code == 201, response.text
        cart: dict[str, Any] = response.json()
        for sku, quantity in items:
            added = self.http.post(f"/carts/{cart['id']}/items",
                                   json={"sku": sku, "quantity": quantity})
            assert added.status_code == 201, added.text
            cart = added.json()
        return cart

    def start_checkout(self, cart_id: str, **overrides: Any) -> httpx.Response:
        body = {"email": "a@b.example", "shipping_address": ADDRESS, **overrides}
        return self.http.post(f"/carts/{cart_id}/checkout", json=body)

    def checkout(self, items: Items = (("HW-PHONE-6", 1),), country: str = "DE",
                 currency: str = "EUR", **overrides: Any) -> dict[str, Any]:
        cart = self.cart(country, currency, items)
        address = {**ADDRESS, "country": country}
        response = self.start_checkout(cart["id"], shipping_address=address, **overrides)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def order(self, checkout_id: str, body: Any = VISA, key: str | None = "fresh",
              **kwargs: Any) -> httpx.Response:
        headers = {} if key is None else {"Idempotency-Key": new_key() if key == "fresh" else key}
        return self.http.post(f"/checkouts/{checkout_id}/orders", json=body, headers=headers,
                              **kwargs)


def new_key() -> str:
    return f"test-{uuid.uuid4()}"


def assert_problem(response: httpx.Response, status: int, slug: str | None = None,
                   field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith(PROBLEM)
    assert body["title"]
    assert body["instance"] == response.request.url.path
    if slug is not None:
        assert body["type"] == PROBLEM + slug
    if field is not None:
        assert field in [error["field"] for error in body["errors"]], body
    return body


def post_concurrently(url: str, keys: Sequence[str]) -> list[httpx.Response]:
    def post(key: str) -> httpx.Response:
        return httpx.post(url, json=VISA, headers={"Idempotency-Key": key}, timeout=30)

    with ThreadPoolExecutor(max_workers=len(keys)) as pool:
        return list(pool.map(post, keys))


APP_FACTORIES: dict[str, Callable[[Path], Any]] = {"legacy": legacy_app, "core": core_app}


@contextmanager
def running_backend(name: str, workdir: Path) -> Iterator[Backend]:
    """Serve the named backend and yield a client whose every response must name it."""
    app = APP_FACTORIES[name](workdir)

    def names_itself(response: httpx.Response) -> None:
        assert response.headers.get("X-Backend-Name") == name, response.request.url

    with serve(app) as server, httpx.Client(
        base_url=server.url, timeout=30, event_hooks={"response": [names_itself]}
    ) as http:
        yield Backend(name, server.url, http)
