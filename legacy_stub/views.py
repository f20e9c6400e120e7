"""JSON shapes of the contract's resources."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from legacy_stub.models import Checkout, Order, PricedCart
from legacy_stub.pricing import Line


def line_view(line: Line) -> dict[str, Any]:
    return {
        "sku": line.sku, "name": line.name, "quantity": line.quantity,
        "unit_price": line.unit_price, "line_total": line.line_total,
    }


def cart_view(priced: PricedCart) -> dict[str, Any]:
    cart, totals = priced.cart, priced.totals
    return {
        "id": cart.id, "country": cart.country, "currency": cart.currency,
        "status": cart.status, "items": [line_view(line) for line in priced.lines],
        "subtotal": totals.subtotal, "tax": totals.tax, "total": totals.total,
    }


def checkout_view(checkout: Checkout) -> dict[str, Any]:
    totals = checkout.totals
    return {
        "id": checkout.id, "cart_id": checkout.cart_id, "status": checkout.status,
        "email": checkout.email, "shipping_address": asdict(checkout.shipping_address),
        "country": checkout.country, "currency": checkout.currency,
        "items": [line_view(line) for line in checkout.lines],
        "promotion_code": checkout.promotion_code, "subtotal": totals.subtotal,
        "discount": totals.discount, "tax": totals.tax, "total": totals.total,
    }


def order_view(order: Order) -> dict[str, Any]:
    return {
        "id": order.id, "checkout_id": order.checkout_id, "status": order.status,
        "currency": order.currency, "total": order.total,
        "items": [line_view(line) for line in order.lines], "email": order.email,
        "payment": asdict(order.payment),
        "created_at": order.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
