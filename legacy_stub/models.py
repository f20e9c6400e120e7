"""The stub's entities: immutable values, changed by building new ones."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from legacy_stub.pricing import Line, Totals

CartStatus = Literal["open", "checked_out"]
CheckoutStatus = Literal["open", "completed"]


@dataclass(frozen=True, slots=True)
class Cart:
    id: str
    country: str
    currency: str
    status: CartStatus = "open"
    items: tuple[tuple[str, int], ...] = ()
    """(sku, quantity) pairs in the order each sku was first added."""

    def quantity_of(self, sku: str) -> int:
        return dict(self.items).get(sku, 0)

    def with_quantity(self, sku: str, quantity: int) -> Cart:
        if sku not in dict(self.items):
            return replace(self, items=(*self.items, (sku, quantity)))
        return replace(self, items=tuple((s, quantity if s == sku else q) for s, q in self.items))

    def without(self, sku: str) -> Cart:
        return replace(self, items=tuple((s, q) for s, q in self.items if s != sku))


@dataclass(frozen=True, slots=True)
class PricedCart:
    cart: Cart
    lines: tuple[Line, ...]
    totals: Totals


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
    order_id: str | None = None


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


@dataclass(frozen=True, slots=True)
class Declined:
    """A payment attempt the gateway refused; the checkout stays open."""

    reason: str


Outcome = Order | Declined


@dataclass(frozen=True, slots=True)
class Placement:
    outcome: Outcome
    replayed: bool = False
