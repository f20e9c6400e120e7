"""Domain values as the JSON documents of docs/contract.md."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from checkout_core.domain.cart import PricedCart
from checkout_core.domain.checkout import Address, Checkout, Order
from checkout_core.domain.events import format_time
from checkout_core.domain.pricing import Line


def line_json(line: Line) -> dict[str, Any]:
    return {"sku": line.sku, "name": line.name, "quantity": line.quantity,
            "unit_price": line.unit_price, "line_total": line.line_total}


def cart_json(priced: PricedCart) -> dict[str, Any]:
    cart, totals = priced.cart, priced.totals
    return {
        "id": cart.id, "country": cart.country, "currency": cart.currency,
        "status": cart.status, "items": [line_json(line) for line in priced.lines],
        "subtotal": totals.subtotal, "tax": totals.tax, "total": totals.total,
    }


def address_json(address: Address) -> dict[str, Any]:
    return {k: v for k, v in asdict(address).items() if v is not None}


def checkout_json(checkout: Checkout) -> dict[str, Any]:
    totals = checkout.totals
    return {
        "id": checkout.id, "cart_id": checkout.cart_id, "status": checkout.status,
        "email": checkout.email, "shipping_address": address_json(checkout.shipping_address),
        "country": checkout.country, "currency": checkout.currency,
        "items": [line_json(line) for line in checkout.lines],
        "promotion_code": checkout.promotion_code, "subtotal": totals.subtotal,
        "discount": totals.discount, "tax": totals.tax, "total": totals.total,
    }


def order_json(order: Order) -> dict[str, Any]:
    return {
        "id": order.id, "checkout_id": order.checkout_id, "status": order.status,
        "currency": order.currency, "total": order.total,
        "items": [line_json(line) for line in order.lines], "email": order.email,
        "payment": {"id": order.payment.id, "status": order.payment.status,
                    "amount": order.payment.amount},
        "created_at": format_time(order.created_at),
    }
