"""Placing an order: an idempotent, crash-safe use case around an unreliable gateway.

1. Begin (one transaction): claim the `Idempotency-Key` by inserting it (the primary key is
   the claim) with a fingerprint of the request and a lease; a duplicate replays the recorded
   outcome, waits while the first request runs, or takes over once its lease ran out. The
   checkout is locked for this key, so two keys cannot pay one checkout at the same time.
2. Charge through `PaymentProcessor` (no transaction is open meanwhile), reconciling first
   when an earlier attempt may have charged.
3. Finish (one transaction): the order, the completed checkout, the recorded outcome and the
   outbox events (`order.placed`, `payment.authorized`), or the decline and `payment.failed`.

An order is never placed for a shadow checkout (`domain.shadow`), and a shadow request never
places one: both are refused in step 1 before the key is claimed, so nothing is recorded and
the gateway is never called.

A crash between any two steps leaves a claim whose lease runs out; the next request with the
same key takes over and reconciles with the gateway before it charges, and a request with
another key settles the stale attempt first. Leases must outlast the longest charge.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Protocol

from checkout_core.domain import events as ev
from checkout_core.domain.checkout import (
    Checkout,
    Order,
    Payment,
    ensure_not_shadow,
    place_order,
)
from checkout_core.domain.errors import (
    RECORDABLE_ERRORS,
    CheckoutCompleted,
    CheckoutPaymentInProgress,
    CoreError,
    IdempotencyRequestInProgress,
    NotFound,
    PaymentDeclined,
    PaymentUnavailable,
)
from checkout_core.domain.shadow import check_traffic
from checkout_core.ids import ORDER, OWNER
from checkout_core.service.context import ServiceContext
from checkout_core.service.idempotency import Busy, Replay, TakeOver, decide
from checkout_core.service.payments import UNKNOWN, PaymentProcessor
from checkout_core.service.ports import (
    ChargeRequest,
    IdempotencyRecord,
    Outcome,
    PaymentLock,
    PaymentResult,
    UnitOfWork,
)


class OrderObserver(Protocol):
    def order_placed(self, order: Order) -> None: ...
    def payment_outcome(self, outcome: str) -> None: ...


class _NoObserver:
    def order_placed(self, order: Order) -> None:
        return None

    def payment_outcome(self, outcome: str) -> None:
        return None


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    checkout_id: str
    idempotency_key: str
    fingerprint: str
    token: str
    shadow: bool = False
    """The request is shadow traffic (`X-Checkout-Shadow: 1`): always refused."""


@dataclass(frozen=True, slots=True)
class _Started:
    checkout: Checkout
    stale_key: str | None
    reconcile_first: bool


def gateway_key(checkout_id: str, idempotency_key: str) -> str:
    return f"{checkout_id}:{idempotency_key}"


def _failure(error: CoreError) -> Outcome:
    return Outcome(error_code=error.code, detail=error.detail)


class OrderService:
    def __init__(
        self,
        ctx: ServiceContext,
        payments: PaymentProcessor,
        lease_seconds: float = 30.0,
        wait_seconds: float = 20.0,
        poll_seconds: float = 0.02,
        observer: OrderObserver | None = None,
    ) -> None:
        self.ctx = ctx
        self.payments = payments
        self.lease = timedelta(seconds=lease_seconds)
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.observer: OrderObserver = observer or _NoObserver()

    async def place_order(self, cmd: PlaceOrder) -> Order:
        """The order, first time or replayed; raises the recorded error otherwise."""
        owner = self.ctx.ids(OWNER)
        deadline = time.monotonic() + self.wait_seconds
        while True:
            begun = await self.ctx.write(lambda uow: self._begin(uow, cmd, owner))
            if isinstance(begun, _Started):
                return await self._pay(cmd, begun)
            if isinstance(begun, Replay):
                return await self._replay(begun.outcome)
            if time.monotonic() >= deadline:
                raise IdempotencyRequestInProgress(
                    "a request with this Idempotency-Key is still being processed; retry later"
                )
            await asyncio.sleep(self.poll_seconds)

    def _begin(self, uow: UnitOfWork, cmd: PlaceOrder, owner: str) -> _Started | Replay | Busy:
        _refuse_shadow(uow, cmd)
        now = self.ctx.clock()
        lease_until = now + self.lease
        record = IdempotencyRecord(
            cmd.idempotency_key, cmd.fingerprint, cmd.checkout_id, owner, lease_until, None
        )
        taken_over = False
        if not uow.idempotency.claim(record):
            existing = uow.idempotency.get(cmd.idempotency_key)
            assert existing is not None
            decision = decide(existing, cmd.fingerprint, now)
            if not isinstance(decision, TakeOver):
                return decision
            uow.idempotency.take_over(cmd.idempotency_key, owner, lease_until)
            taken_over = True
        checkout = uow.checkouts.get(cmd.checkout_id)
        if checkout is None:
            missing = NotFound(f"no checkout {cmd.checkout_id}")
            return self._record(uow, cmd.idempotency_key, missing)
        if checkout.status == "completed":
            return self._record(uow, cmd.idempotency_key, _completed(checkout))
        lock = uow.checkouts.payment_lock(checkout.id)
        if lock is not None and lock.key != cmd.idempotency_key and lock.lease_until > now:
            raise CheckoutPaymentInProgress(
                f"another request is paying checkout {checkout.id}; retry later"
            )
        uow.checkouts.set_payment_lock(checkout.id, PaymentLock(cmd.idempotency_key, lease_until))
        own_earlier = lock is not None and lock.key == cmd.idempotency_key
        stale = lock.key if lock is not None and not own_earlier else None
        return _Started(checkout, stale, reconcile_first=taken_over or own_earlier)

    def _record(self, uow: UnitOfWork, key: str, error: CoreError) -> Replay:
        outcome = _failure(error)
        uow.idempotency.complete(key, outcome, self.ctx.clock())
        return Replay(outcome)

    async def _replay(self, outcome: Outcome) -> Order:
        if outcome.order_id is not None:
            order_id = outcome.order_id
            order = await self.ctx.read(lambda uow: uow.orders.get(order_id))
            assert order is not None
            return order
        raise RECORDABLE_ERRORS[str(outcome.error_code)](outcome.detail)

    async def _pay(self, cmd: PlaceOrder, started: _Started) -> Order:
        checkout = started.checkout
        if started.stale_key is not None and await self._settle_stale(cmd, started.stale_key):
            outcome = await self.ctx.write(
                lambda uow: self._record(uow, cmd.idempotency_key, _completed(checkout)).outcome
            )
            return await self._replay(outcome)
        request = ChargeRequest(
            gateway_key(checkout.id, cmd.idempotency_key), checkout.totals.total,
            checkout.currency, cmd.token,
        )
        try:
            result = await self.payments.charge(request, reconcile_first=started.reconcile_first)
        except PaymentUnavailable:
            await self._release(cmd)
            self.observer.payment_outcome("unavailable")
            raise
        self.observer.payment_outcome(result.status)
        if result.status == "declined":
            outcome = await self.ctx.write(lambda uow: self._decline(uow, cmd, checkout, result))
            return await self._replay(outcome)
        return await self._finish(cmd.idempotency_key, checkout.id, result)

    async def _settle_stale(self, cmd: PlaceOrder, stale_key: str) -> bool:
        """Reconcile an abandoned attempt by another key; True if it had paid (order placed)."""
        found = await self.payments.reconcile(gateway_key(cmd.checkout_id, stale_key))
        if found is UNKNOWN:
            await self._release(cmd)
            raise PaymentUnavailable("cannot settle an earlier payment attempt; retry later")
        if found is None or found.status != "authorized":
            return False
        await self._finish(stale_key, cmd.checkout_id, found)
        return True

    async def _finish(self, key: str, checkout_id: str, result: PaymentResult) -> Order:
        outcome, placed = await self.ctx.write(
            lambda uow: self._place(uow, key, checkout_id, result)
        )
        if placed is not None:
            self.observer.order_placed(placed)
            return placed
        return await self._replay(outcome)

    def _place(
        self, uow: UnitOfWork, key: str, checkout_id: str, result: PaymentResult
    ) -> tuple[Outcome, Order | None]:
        record = uow.idempotency.get(key)
        if record is not None and record.outcome is not None:
            return record.outcome, None
        now = self.ctx.clock()
        checkout = uow.checkouts.get(checkout_id)
        assert checkout is not None
        if checkout.status == "completed":
            uow.outbox.add([self.ctx.event(ev.PAYMENT_ORPHANED, result.payment_id, _payment_data(
                checkout, result, reason="checkout already completed; void this authorization"))])
            return self._record(uow, key, _completed(checkout)).outcome, None
        payment = Payment(result.payment_id, "authorized", result.amount)
        order, completed = place_order(checkout, self.ctx.ids(ORDER), payment, now)
        uow.orders.add(order, key)
        uow.checkouts.update(completed, now)
        uow.checkouts.set_payment_lock(checkout.id, None)
        outcome = Outcome(order_id=order.id)
        uow.idempotency.complete(key, outcome, now)
        uow.outbox.add([
            self.ctx.event(ev.ORDER_PLACED, order.id, order_data(order, checkout)),
            self.ctx.event(ev.PAYMENT_AUTHORIZED, result.payment_id,
                           {**_payment_data(checkout, result), "order_id": order.id}),
        ])
        return outcome, order

    def _decline(
        self, uow: UnitOfWork, cmd: PlaceOrder, checkout: Checkout, result: PaymentResult
    ) -> Outcome:
        record = uow.idempotency.get(cmd.idempotency_key)
        if record is not None and record.outcome is not None:
            return record.outcome
        reason = result.decline_reason or "declined"
        outcome = _failure(PaymentDeclined(f"the payment was declined ({reason})"))
        uow.idempotency.complete(cmd.idempotency_key, outcome, self.ctx.clock())
        self._unlock(uow, cmd)
        uow.outbox.add([self.ctx.event(
            ev.PAYMENT_FAILED, result.payment_id, _payment_data(checkout, result, reason=reason)
        )])
        return outcome

    async def _release(self, cmd: PlaceOrder) -> None:
        """Give up for now: expire the leases; the key and the lock stay for reconciliation."""
        def work(uow: UnitOfWork) -> None:
            now = self.ctx.clock()
            uow.idempotency.expire(cmd.idempotency_key, now)
            lock = uow.checkouts.payment_lock(cmd.checkout_id)
            if lock is not None and lock.key == cmd.idempotency_key:
                uow.checkouts.set_payment_lock(cmd.checkout_id, PaymentLock(lock.key, now))

        await self.ctx.write(work)

    @staticmethod
    def _unlock(uow: UnitOfWork, cmd: PlaceOrder) -> None:
        lock = uow.checkouts.payment_lock(cmd.checkout_id)
        if lock is not None and lock.key == cmd.idempotency_key:
            uow.checkouts.set_payment_lock(cmd.checkout_id, None)


def _refuse_shadow(uow: UnitOfWork, cmd: PlaceOrder) -> None:
    """Refuse an order for a shadow checkout, and any order a shadow request asks for, before
    anything is claimed or charged."""
    checkout = uow.checkouts.get(cmd.checkout_id)
    if checkout is not None:
        ensure_not_shadow(checkout)
    if cmd.shadow:
        if checkout is None:
            raise NotFound(f"no checkout {cmd.checkout_id}")
        check_traffic(f"checkout {checkout.id}", False, True)


def _completed(checkout: Checkout) -> CheckoutCompleted:
    return CheckoutCompleted(f"checkout {checkout.id} already has an order")


def _payment_data(
    checkout: Checkout, result: PaymentResult, reason: str | None = None
) -> dict[str, object]:
    data: dict[str, object] = {
        "payment_id": result.payment_id, "checkout_id": checkout.id,
        "amount": result.amount, "currency": result.currency, "status": result.status,
    }
    if reason is not None:
        data["reason"] = reason
    return data


def order_data(order: Order, checkout: Checkout) -> dict[str, object]:
    """The `order.placed` payload: the order as the API shows it, plus where it ships."""
    return {
        "order_id": order.id, "checkout_id": order.checkout_id, "status": order.status,
        "currency": order.currency, "total": order.total, "email": order.email,
        "items": [{**asdict(line), "line_total": line.line_total} for line in order.lines],
        "payment": asdict(order.payment), "created_at": ev.format_time(order.created_at),
        "country": checkout.country, "shipping_address": asdict(checkout.shipping_address),
        "subtotal": checkout.totals.subtotal, "discount": checkout.totals.discount,
        "tax": checkout.totals.tax, "promotion_code": checkout.promotion_code,
    }
