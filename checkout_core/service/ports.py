"""Ports of the service layer: storage (a unit of work per use case), the payment gateway, ids
and the clock. Adapters implement them; `bootstrap` picks the adapters.

Gateway errors (raised by `PaymentGateway` adapters):

    GatewayError
    ├── GatewayUnavailable     refused before charging (connection refused, 503): safe to retry
    └── GatewayTimeout         no answer: the charge may or may not have happened (unknown outcome)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, TypeVar

from checkout_core.domain.cart import Cart
from checkout_core.domain.checkout import Checkout, Order
from checkout_core.domain.events import Event

T = TypeVar("T")


class Clock(Protocol):
    def __call__(self) -> datetime: ...


class IdFactory(Protocol):
    def __call__(self, prefix: str) -> str: ...


# --- storage ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentLock:
    """Which idempotency key is paying a checkout, and until when its lease runs."""

    key: str
    lease_until: datetime


@dataclass(frozen=True, slots=True)
class Outcome:
    """A final result of placing an order: an order id, or a recordable error code + detail."""

    order_id: str | None = None
    error_code: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    key: str
    fingerprint: str
    checkout_id: str
    owner: str
    lease_until: datetime
    outcome: Outcome | None
    """None while the first request runs; set once, in the transaction that decides it."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    seq: int
    event: Event


@dataclass(frozen=True, slots=True)
class OutboxLag:
    unpublished: int
    oldest_age_seconds: float


@dataclass(frozen=True, slots=True)
class ShadowExpired:
    """What one expiry batch deleted."""

    carts: int = 0
    checkouts: int = 0


class CartRepository(Protocol):
    def get(self, cart_id: str) -> Cart | None: ...
    def add(self, cart: Cart, now: datetime) -> None: ...
    def update(self, cart: Cart, now: datetime) -> None: ...


class CheckoutRepository(Protocol):
    def get(self, checkout_id: str) -> Checkout | None: ...
    def add(self, checkout: Checkout, now: datetime) -> None: ...
    def update(self, checkout: Checkout, now: datetime) -> None: ...
    def payment_lock(self, checkout_id: str) -> PaymentLock | None: ...
    def set_payment_lock(self, checkout_id: str, lock: PaymentLock | None) -> None: ...


class OrderRepository(Protocol):
    def get(self, order_id: str) -> Order | None: ...
    def add(self, order: Order, idempotency_key: str) -> None: ...


class IdempotencyRepository(Protocol):
    def claim(self, record: IdempotencyRecord) -> bool:
        """Insert `record` unless its key exists (a DB uniqueness claim); True when inserted."""
        ...

    def get(self, key: str) -> IdempotencyRecord | None: ...
    def take_over(self, key: str, owner: str, lease_until: datetime) -> None: ...
    def expire(self, key: str, now: datetime) -> None: ...
    def complete(self, key: str, outcome: Outcome, now: datetime) -> None: ...


class OutboxRepository(Protocol):
    def add(self, events: Sequence[Event]) -> None: ...
    def unpublished(self, limit: int) -> list[OutboxEntry]: ...
    def mark_published(self, seqs: Sequence[int], now: datetime) -> None: ...
    def lag(self, now: datetime) -> OutboxLag: ...


class ShadowRepository(Protocol):
    def expire(self, created_before: datetime, limit: int) -> ShadowExpired:
        """Delete up to `limit` shadow carts created before `created_before`, oldest first,
        with their items and their checkouts."""
        ...


class UnitOfWork(Protocol):
    """The repositories of one transaction."""

    @property
    def carts(self) -> CartRepository: ...
    @property
    def checkouts(self) -> CheckoutRepository: ...
    @property
    def orders(self) -> OrderRepository: ...
    @property
    def idempotency(self) -> IdempotencyRepository: ...
    @property
    def outbox(self) -> OutboxRepository: ...
    @property
    def shadow(self) -> ShadowRepository: ...


class Store(Protocol):
    async def run(self, work: Callable[[UnitOfWork], T], *, write: bool = True) -> T:
        """Run `work` in one transaction (committed when it returns, rolled back if it raises)."""
        ...

    async def ping(self) -> None: ...


# --- payment gateway ----------------------------------------------------------------------


class GatewayError(Exception):
    pass


class GatewayUnavailable(GatewayError):
    pass


class GatewayTimeout(GatewayError):
    pass


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    idempotency_key: str
    amount: int
    currency: str
    token: str


@dataclass(frozen=True, slots=True)
class PaymentResult:
    payment_id: str
    status: Literal["authorized", "declined"]
    amount: int
    currency: str
    decline_reason: str | None = None


class PaymentGateway(Protocol):
    async def authorize(self, request: ChargeRequest) -> PaymentResult: ...

    async def lookup(self, idempotency_key: str) -> PaymentResult | None:
        """The payment an earlier `authorize` with this key made, if it made one."""
        ...
