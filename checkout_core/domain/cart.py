"""Carts and their line items: immutable values, changed by building new ones."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from checkout_core.domain.catalog import Catalog
from checkout_core.domain.errors import CartNotOpen, NotFound, ValidationFailed
from checkout_core.domain.pricing import Line, PricingDrift, Totals, price, taxation

CartStatus = Literal["open", "checked_out"]
MIN_QUANTITY = 1
MAX_QUANTITY = 99


@dataclass(frozen=True, slots=True)
class Cart:
    id: str
    country: str
    currency: str
    status: CartStatus = "open"
    items: tuple[tuple[str, int], ...] = ()
    """(sku, quantity) pairs in the order each sku was first added."""
    shadow: bool = False
    """Created by a shadow request (`domain.shadow`); so is all that derives from it."""

    def quantity_of(self, sku: str) -> int:
        return dict(self.items).get(sku, 0)


@dataclass(frozen=True, slots=True)
class PricedCart:
    cart: Cart
    lines: tuple[Line, ...]
    totals: Totals


def new_cart(
    catalog: Catalog, cart_id: str, country: str, currency: str, shadow: bool = False
) -> Cart:
    catalog.market(country, currency)
    return Cart(id=cart_id, country=country, currency=currency, shadow=shadow)


def _check_open(cart: Cart) -> None:
    if cart.status != "open":
        raise CartNotOpen(f"cart {cart.id} is {cart.status}")


def _check_quantity(quantity: int) -> None:
    if not MIN_QUANTITY <= quantity <= MAX_QUANTITY:
        raise ValidationFailed.field(
            "quantity", f"quantity must be between {MIN_QUANTITY} and {MAX_QUANTITY}"
        )


def _with_quantity(cart: Cart, sku: str, quantity: int) -> Cart:
    if sku not in dict(cart.items):
        return replace(cart, items=(*cart.items, (sku, quantity)))
    return replace(cart, items=tuple((s, quantity if s == sku else q) for s, q in cart.items))


def add_item(cart: Cart, catalog: Catalog, sku: str, quantity: int) -> Cart:
    """Add `quantity` of `sku`; a sku already in the cart adds to its quantity (max 99)."""
    _check_open(cart)
    catalog.product(sku, cart.currency)
    _check_quantity(quantity)
    total = cart.quantity_of(sku) + quantity
    if total > MAX_QUANTITY:
        raise ValidationFailed.field(
            "quantity", f"the cart would hold {total} of {sku}; at most {MAX_QUANTITY}"
        )
    return _with_quantity(cart, sku, total)


def change_quantity(cart: Cart, sku: str, quantity: int) -> Cart:
    _check_open(cart)
    if cart.quantity_of(sku) == 0:
        raise NotFound(f"sku {sku} is not in cart {cart.id}")
    _check_quantity(quantity)
    return _with_quantity(cart, sku, quantity)


def remove_item(cart: Cart, sku: str) -> Cart:
    _check_open(cart)
    if cart.quantity_of(sku) == 0:
        raise NotFound(f"sku {sku} is not in cart {cart.id}")
    return replace(cart, items=tuple((s, q) for s, q in cart.items if s != sku))


def lines_of(cart: Cart, catalog: Catalog) -> tuple[Line, ...]:
    lines = []
    for sku, quantity in cart.items:
        product = catalog.product(sku, cart.currency)
        lines.append(Line(sku, product.name, quantity, product.prices[cart.currency]))
    return tuple(lines)


def priced(cart: Cart, catalog: Catalog, drift: PricingDrift | None = None) -> PricedCart:
    """The cart with its lines and totals; `drift`: a pricing drift in force (fault drills)."""
    lines = lines_of(cart, catalog)
    rate = catalog.country(cart.country).tax_rate_bp
    return PricedCart(cart, lines, price(lines, taxation(cart.country, rate, drift)))
