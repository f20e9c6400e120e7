"""Shortcuts for integration tests: a ready checkout, an order, HTTP bodies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from checkout_core.bootstrap import Core
from checkout_core.domain.checkout import Address, Checkout, Order
from checkout_core.service.idempotency import fingerprint
from checkout_core.service.ordering import PlaceOrder

ADDRESS = Address("Ada Lovelace", "Main St 1", "Berlin", "10115", "DE")
ADDRESS_JSON = {"name": "Ada Lovelace", "line1": "Main St 1", "city": "Berlin",
                "postal_code": "10115", "country": "DE"}


async def open_checkout(
    core: Core, sku: str = "HW-PHONE-6", quantity: int = 2, promotion: str | None = None
) -> Checkout:
    cart = await core.carts.create_cart("DE", "EUR")
    await core.carts.add_item(cart.cart.id, sku, quantity)
    return await core.carts.start_checkout(cart.cart.id, "a@b.example", ADDRESS, promotion)


def command(checkout_id: str, key: str, token: str = "tok_visa") -> PlaceOrder:
    body = {"payment": {"method": "card", "token": token}}
    return PlaceOrder(checkout_id, key, fingerprint(checkout_id, body), token)


async def place(core: Core, checkout_id: str, key: str, token: str = "tok_visa") -> Order:
    return await core.orders.place_order(command(checkout_id, key, token))


def payment_body(token: str = "tok_visa") -> dict[str, Any]:
    return {"payment": {"method": "card", "token": token}}


def http_checkout(client: httpx.Client, sku: str = "HW-PHONE-6", quantity: int = 1) -> str:
    """Create a cart with one line and check it out over HTTP; the checkout id."""
    cart = client.post("/carts", json={"country": "DE", "currency": "EUR"}).json()
    client.post(f"/carts/{cart['id']}/items", json={"sku": sku, "quantity": quantity})
    response = client.post(f"/carts/{cart['id']}/checkout",
                           json={"email": "a@b.example", "shipping_address": ADDRESS_JSON})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02,
               message: str = "condition") -> None:
    """Poll `predicate` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


async def async_wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0,
                           interval: float = 0.02, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)
