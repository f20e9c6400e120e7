"""Checkouts: a priced snapshot of a cart with the buyer's details, and the orders they become."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from checkout_core.domain.cart import Cart, lines_of
from checkout_core.domain.catalog import Catalog
from checkout_core.domain.errors import (
    CartEmpty,
    CartNotOpen,
    CheckoutCompleted,
    ShadowCheckout,
    ValidationFailed,
)
from checkout_core.domain.pricing import (
    Line,
    PricingDrift,
    Totals,
    check_promotion,
    price,
    subtotal_of,
    taxation,
)

CheckoutStatus = Literal["open", "completed"]
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


@dataclass(frozen=True, slots=True)
class Address:
    name: str
    line1: str
    city: str
    postal_code: str
    country: str
    line2: str | None = None


@dataclass(frozen=True, slots=True)
class Checkout:
    id: str
    cart_id: str
    email: str
    shipping_address: Address
    country: str
    currency: str
    lines: tuple[Line, ...]
    promotion_code: str | None
    totals: Totals
    status: CheckoutStatus = "open"
    shadow: bool = False
    """Created from a shadow cart: never paid for, never published, expired."""


@dataclass(frozen=True, slots=True)
class Payment:
    id: str
    status: Literal["authorized"]
    amount: int


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    checkout_id: str
    currency: str
    total: int
    lines: tuple[Line, ...]
    email: str
    payment: Payment
    created_at: datetime
    status: Literal["placed"] = "placed"


def check_email(email: str) -> None:
    if len(email) > 254 or EMAIL.fullmatch(email) is None:
        raise ValidationFailed.field("email", "must be an email address like a@b.example")


def start_checkout(
    cart: Cart,
    catalog: Catalog,
    checkout_id: str,
    email: str,
    address: Address,
    promotion_code: str | None,
    drift: PricingDrift | None = None,
) -> tuple[Checkout, Cart]:
    """Price the cart into a checkout; the cart becomes `checked_out`. The checkout is a
    shadow one if the cart is; `drift`: a pricing drift in force (fault drills)."""
    if cart.status != "open":
        raise CartNotOpen(f"cart {cart.id} is {cart.status}")
    if not cart.items:
        raise CartEmpty(f"cart {cart.id} is empty")
    check_email(email)
    lines = lines_of(cart, catalog)
    promotion = catalog.promotion(promotion_code) if promotion_code is not None else None
    if promotion is not None:
        check_promotion(promotion, subtotal_of(lines))
    rate = catalog.country(cart.country).tax_rate_bp
    totals = price(lines, taxation(cart.country, rate, drift), promotion)
    checkout = Checkout(
        id=checkout_id,
        cart_id=cart.id,
        email=email,
        shipping_address=address,
        country=cart.country,
        currency=cart.currency,
        lines=lines,
        promotion_code=promotion.code if promotion else None,
        totals=totals,
        shadow=cart.shadow,
    )
    return checkout, replace(cart, status="checked_out")


def ensure_not_shadow(checkout: Checkout) -> None:
    """No order is ever placed for a shadow checkout."""
    if checkout.shadow:
        raise ShadowCheckout(f"checkout {checkout.id} is a shadow checkout; no order is ever "
                             "placed for one")


def ensure_payable(checkout: Checkout) -> None:
    ensure_not_shadow(checkout)
    if checkout.status == "completed":
        raise CheckoutCompleted(f"checkout {checkout.id} already has an order")


def place_order(
    checkout: Checkout, order_id: str, payment: Payment, now: datetime
) -> tuple[Order, Checkout]:
    """The order an authorized payment buys; the checkout becomes `completed`."""
    ensure_payable(checkout)
    order = Order(
        id=order_id,
        checkout_id=checkout.id,
        currency=checkout.currency,
        total=checkout.totals.total,
        lines=checkout.lines,
        email=checkout.email,
        payment=payment,
        created_at=now,
    )
    return order, replace(checkout, status="completed")
