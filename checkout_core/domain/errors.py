"""The core's error tree. Domain and service raise these; only the web layer maps them to HTTP.

    CoreError                      (code: a stable slug, message: the detail)
    ├── NotFound                   an unknown cart, checkout or order, or a sku not in the cart
    ├── ValidationFailed           values the rules refuse; carries field errors
    ├── Conflict                   the request clashes with the current state
    │   ├── CartNotOpen
    │   ├── CartEmpty
    │   ├── CheckoutCompleted
    │   ├── CheckoutPaymentInProgress   another idempotency key is paying this checkout
    │   ├── IdempotencyKeyReuse         same key, different request
    │   ├── IdempotencyRequestInProgress  same key, first request still running after the wait
    │   ├── NotShadow                   a shadow request names a real (non-shadow) resource
    │   ├── ShadowResource              a real request names a shadow resource
    │   └── ShadowCheckout              an order for a shadow checkout: never placed
    ├── PaymentDeclined            the gateway refused; the checkout stays open
    └── PaymentUnavailable         the gateway's outcome could not be established; retry is safe
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


class CoreError(Exception):
    """Base of the core's errors; `code` names the problem type, the message is its detail."""

    code = "error"

    @property
    def detail(self) -> str:
        return str(self)


class NotFound(CoreError):
    code = "not-found"


class ValidationFailed(CoreError):
    code = "validation-error"

    def __init__(self, *errors: FieldError) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors

    @classmethod
    def field(cls, field: str, message: str) -> ValidationFailed:
        return cls(FieldError(field, message))


class Conflict(CoreError):
    code = "conflict"


class CartNotOpen(Conflict):
    code = "cart-not-open"


class CartEmpty(Conflict):
    code = "cart-empty"


class CheckoutCompleted(Conflict):
    code = "checkout-completed"


class CheckoutPaymentInProgress(Conflict):
    code = "checkout-payment-in-progress"


class IdempotencyKeyReuse(Conflict):
    code = "idempotency-key-reuse"


class IdempotencyRequestInProgress(Conflict):
    code = "idempotency-request-in-progress"


class NotShadow(Conflict):
    code = "not-shadow"


class ShadowResource(Conflict):
    code = "shadow-resource"


class ShadowCheckout(Conflict):
    code = "shadow-checkout"


class PaymentDeclined(CoreError):
    code = "payment-declined"


class PaymentUnavailable(CoreError):
    code = "payment-unavailable"


RECORDABLE_ERRORS: dict[str, type[CoreError]] = {
    cls.code: cls for cls in (NotFound, CheckoutCompleted, PaymentDeclined)
}
"""Final outcomes of placing an order that an idempotency key remembers and replays."""
