"""The stub's checkout operations: the contract's rules over the in-memory store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from legacy_stub.catalog import Catalog, Country, Promotion
from legacy_stub.errors import (
    CartEmpty,
    CartNotOpen,
    CheckoutCompleted,
    IdempotencyKeyReuse,
    InvalidInput,
    NotFound,
)
from legacy_stub.models import Address, Cart, Checkout, Declined, Order, Placement, PricedCart
from legacy_stub.payments import PaymentGateway
from legacy_stub.pricing import Line, price
from legacy_stub.store import AttemptRecord, InMemoryStore, new_id

MAX_QUANTITY = 99


@dataclass(frozen=True, slots=True)
class CheckoutDetails:
    email: str
    shipping_address: Address
    promotion_code: str | None = None


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class CheckoutService:
    def __init__(
        self,
        catalog: Catalog,
        store: InMemoryStore,
        gateway: PaymentGateway,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._catalog = catalog
        self._store = store
        self._gateway = gateway
        self._clock = clock

    # carts

    def create_cart(self, country: str, currency: str) -> PricedCart:
        self._market(country, currency)
        cart = Cart(id=new_id("cart"), country=country, currency=currency)
        with self._store.lock:
            self._store.carts[cart.id] = cart
        return self._priced(cart)

    def get_cart(self, cart_id: str) -> PricedCart:
        with self._store.lock:
            return self._priced(self._cart(cart_id))

    def add_item(self, cart_id: str, sku: str, quantity: int) -> PricedCart:
        with self._store.lock:
            cart = self._open_cart(cart_id)
            if self._catalog.product(sku) is None:
                raise InvalidInput.field("sku", f"unknown sku {sku!r}")
            merged = cart.quantity_of(sku) + quantity
            if merged > MAX_QUANTITY:
                raise InvalidInput.field(
                    "quantity", f"the cart would hold {merged}; at most {MAX_QUANTITY} allowed"
                )
            return self._save(cart.with_quantity(sku, merged))

    def set_quantity(self, cart_id: str, sku: str, quantity: int) -> PricedCart:
        with self._store.lock:
            cart = self._cart_holding(cart_id, sku)
            return self._save(cart.with_quantity(sku, quantity))

    def remove_item(self, cart_id: str, sku: str) -> PricedCart:
        with self._store.lock:
            return self._save(self._cart_holding(cart_id, sku).without(sku))

    # checkouts and orders

    def start_checkout(self, cart_id: str, details: CheckoutDetails) -> Checkout:
        with self._store.lock:
            priced = self._priced(self._open_cart(cart_id))
            cart = priced.cart
            if not cart.items:
                raise CartEmpty("The cart is empty.")
            promotion = self._promotion(details.promotion_code, priced.totals.subtotal)
            checkout = Checkout(
                id=new_id("chk"), cart_id=cart.id, email=details.email,
                shipping_address=details.shipping_address, country=cart.country,
                currency=cart.currency, lines=priced.lines,
                promotion_code=promotion.code if promotion else None,
                totals=price(priced.lines, self._country(cart.country).tax_rate_bp, promotion),
            )
            self._store.checkouts[checkout.id] = checkout
            self._store.carts[cart.id] = replace(cart, status="checked_out")
            return checkout

    def place_order(self, checkout_id: str, key: str, fingerprint: str, token: str) -> Placement:
        """Pay for a checkout once per Idempotency-Key; a repeated key replays its outcome.

        Keys are global: `fingerprint` covers the checkout id and the body, so a key reused
        for another checkout or another body is refused.
        """
        with self._store.lock:
            record = self._store.attempts.get(key)
            if record is not None:
                if record.fingerprint != fingerprint:
                    raise IdempotencyKeyReuse(
                        "This Idempotency-Key was used for a different request; use a new key."
                    )
                return Placement(record.outcome, replayed=True)
            checkout = self._checkout(checkout_id)
            if checkout.order_id is not None:
                raise CheckoutCompleted(f"Checkout {checkout_id} already has an order.")
            outcome = self._pay(checkout, token)
            self._store.attempts[key] = AttemptRecord(fingerprint, outcome)
            return Placement(outcome)

    def get_order(self, order_id: str) -> Order:
        with self._store.lock:
            order = self._store.orders.get(order_id)
        if order is None:
            raise NotFound(f"No order {order_id}.")
        return order

    # helpers (callers hold the lock)

    def _pay(self, checkout: Checkout, token: str) -> Order | Declined:
        total = checkout.totals.total
        payment = self._gateway.authorize(token, total, checkout.currency)
        if isinstance(payment, Declined):
            return payment
        order = Order(
            id=new_id("ord"), checkout_id=checkout.id, currency=checkout.currency, total=total,
            lines=checkout.lines, email=checkout.email, payment=payment,
            created_at=self._clock(),
        )
        self._store.orders[order.id] = order
        self._store.checkouts[checkout.id] = replace(
            checkout, status="completed", order_id=order.id
        )
        return order

    def _market(self, country: str, currency: str) -> None:
        known = self._catalog.country(country)
        if known is None:
            raise InvalidInput.field("country", f"unsupported country {country!r}")
        if currency not in known.currencies:
            allowed = ", ".join(known.currencies)
            raise InvalidInput.field("currency", f"{country} sells in {allowed}")

    def _country(self, code: str) -> Country:
        country = self._catalog.country(code)
        assert country is not None, "carts are only created for known countries"
        return country

    def _promotion(self, code: str | None, subtotal: int) -> Promotion | None:
        if code is None:
            return None
        promotion = self._catalog.promotion(code.strip().upper())
        if promotion is None:
            raise InvalidInput.field("promotion_code", f"unknown promotion code {code!r}")
        if not promotion.applies_to(subtotal):
            raise InvalidInput.field(
                "promotion_code", f"{code} needs a subtotal of at least {promotion.min_subtotal}"
            )
        return promotion

    def _priced(self, cart: Cart) -> PricedCart:
        lines = tuple(self._line(sku, qty, cart.currency) for sku, qty in cart.items)
        return PricedCart(cart, lines, price(lines, self._country(cart.country).tax_rate_bp))

    def _line(self, sku: str, quantity: int, currency: str) -> Line:
        product = self._catalog.product(sku)
        assert product is not None, "carts only hold catalog skus"
        return Line(sku, product.name, quantity, product.price_in(currency))

    def _save(self, cart: Cart) -> PricedCart:
        self._store.carts[cart.id] = cart
        return self._priced(cart)

    def _cart(self, cart_id: str) -> Cart:
        cart = self._store.carts.get(cart_id)
        if cart is None:
            raise NotFound(f"No cart {cart_id}.")
        return cart

    def _open_cart(self, cart_id: str) -> Cart:
        cart = self._cart(cart_id)
        if cart.status != "open":
            raise CartNotOpen(f"Cart {cart_id} is {cart.status}.")
        return cart

    def _cart_holding(self, cart_id: str, sku: str) -> Cart:
        cart = self._open_cart(cart_id)
        if cart.quantity_of(sku) == 0:
            raise NotFound(f"Cart {cart_id} holds no {sku}.")
        return cart

    def _checkout(self, checkout_id: str) -> Checkout:
        checkout = self._store.checkouts.get(checkout_id)
        if checkout is None:
            raise NotFound(f"No checkout {checkout_id}.")
        return checkout
