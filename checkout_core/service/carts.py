"""Use cases for carts and checkouts: each one transaction that also writes its events.

Every use case takes `shadow`: whether the request is shadow traffic (`domain.shadow`). A
shadow request creates shadow carts and touches only shadow resources; a real request only
real ones. Shadow carts and checkouts write no events: nothing about them goes downstream.
"""

from __future__ import annotations

from dataclasses import asdict

from checkout_core.domain import cart as carts
from checkout_core.domain import events as ev
from checkout_core.domain.cart import Cart, PricedCart
from checkout_core.domain.checkout import Address, Checkout, Order, start_checkout
from checkout_core.domain.errors import NotFound
from checkout_core.domain.events import Event
from checkout_core.domain.shadow import check_traffic
from checkout_core.ids import CART, CHECKOUT
from checkout_core.service.context import ServiceContext
from checkout_core.service.ports import UnitOfWork


def _cart(uow: UnitOfWork, cart_id: str, shadow: bool) -> Cart:
    cart = uow.carts.get(cart_id)
    if cart is None:
        raise NotFound(f"no cart {cart_id}")
    check_traffic(f"cart {cart_id}", cart.shadow, shadow)
    return cart


def _publish(uow: UnitOfWork, shadow: bool, event: Event) -> None:
    """Write `event` to the outbox, unless it is about a shadow resource."""
    if not shadow:
        uow.outbox.add([event])


class CartService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def _priced(self, cart: Cart) -> PricedCart:
        return carts.priced(cart, self.ctx.catalog, self.ctx.pricing_drift())

    async def create_cart(self, country: str, currency: str, *, shadow: bool = False) -> PricedCart:
        cart = carts.new_cart(self.ctx.catalog, self.ctx.ids(CART), country, currency, shadow)

        def work(uow: UnitOfWork) -> PricedCart:
            uow.carts.add(cart, self.ctx.clock())
            data = {"cart_id": cart.id, "country": country, "currency": currency}
            _publish(uow, cart.shadow, self.ctx.event(ev.CART_CREATED, cart.id, data))
            return self._priced(cart)

        return await self.ctx.write(work)

    async def get_cart(self, cart_id: str, *, shadow: bool = False) -> PricedCart:
        return await self.ctx.read(lambda uow: self._priced(_cart(uow, cart_id, shadow)))

    async def add_item(
        self, cart_id: str, sku: str, quantity: int, *, shadow: bool = False
    ) -> PricedCart:
        def work(uow: UnitOfWork) -> PricedCart:
            cart = carts.add_item(_cart(uow, cart_id, shadow), self.ctx.catalog, sku, quantity)
            return self._save(uow, cart, ev.CART_ITEM_ADDED, sku, quantity)

        return await self.ctx.write(work)

    async def change_quantity(
        self, cart_id: str, sku: str, quantity: int, *, shadow: bool = False
    ) -> PricedCart:
        def work(uow: UnitOfWork) -> PricedCart:
            cart = carts.change_quantity(_cart(uow, cart_id, shadow), sku, quantity)
            return self._save(uow, cart, ev.CART_ITEM_QUANTITY_CHANGED, sku, quantity)

        return await self.ctx.write(work)

    async def remove_item(self, cart_id: str, sku: str, *, shadow: bool = False) -> PricedCart:
        def work(uow: UnitOfWork) -> PricedCart:
            cart = carts.remove_item(_cart(uow, cart_id, shadow), sku)
            return self._save(uow, cart, ev.CART_ITEM_REMOVED, sku, 0)

        return await self.ctx.write(work)

    def _save(self, uow: UnitOfWork, cart: Cart, type_: str, sku: str, quantity: int) -> PricedCart:
        uow.carts.update(cart, self.ctx.clock())
        data = {"cart_id": cart.id, "sku": sku, "quantity": quantity,
                "cart_quantity": cart.quantity_of(sku)}
        _publish(uow, cart.shadow, self.ctx.event(type_, cart.id, data))
        return self._priced(cart)

    async def start_checkout(
        self, cart_id: str, email: str, address: Address, promotion_code: str | None,
        *, shadow: bool = False,
    ) -> Checkout:
        checkout_id = self.ctx.ids(CHECKOUT)

        def work(uow: UnitOfWork) -> Checkout:
            checkout, cart = start_checkout(
                _cart(uow, cart_id, shadow), self.ctx.catalog, checkout_id, email, address,
                promotion_code, self.ctx.pricing_drift(),
            )
            now = self.ctx.clock()
            uow.carts.update(cart, now)
            uow.checkouts.add(checkout, now)
            _publish(uow, checkout.shadow,
                     self.ctx.event(ev.CHECKOUT_STARTED, checkout.id, _started(checkout)))
            return checkout

        return await self.ctx.write(work)

    async def get_order(self, order_id: str, *, shadow: bool = False) -> Order:
        def work(uow: UnitOfWork) -> Order:
            order = uow.orders.get(order_id)
            if order is None:
                raise NotFound(f"no order {order_id}")
            check_traffic(f"order {order_id}", False, shadow)  # orders are never shadow
            return order

        return await self.ctx.read(work)


def _started(checkout: Checkout) -> dict[str, object]:
    return {
        "checkout_id": checkout.id, "cart_id": checkout.cart_id, "country": checkout.country,
        "currency": checkout.currency, "promotion_code": checkout.promotion_code,
        "subtotal": checkout.totals.subtotal, "discount": checkout.totals.discount,
        "tax": checkout.totals.tax, "total": checkout.totals.total,
        "shipping_address": asdict(checkout.shipping_address),
    }
