"""Errors of the stub's checkout domain. The web layer maps them to problem+json.

    CheckoutError
    ├── NotFound              an unknown cart, checkout or order, or a sku not in the cart
    ├── InvalidInput          values the rules refuse; carries field errors
    └── Conflict              the request clashes with the current state
        ├── CartNotOpen
        ├── CartEmpty
        ├── CheckoutCompleted
        └── IdempotencyKeyReuse
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


class CheckoutError(Exception):
    """Base of the domain's errors; the message is the problem's detail."""


class NotFound(CheckoutError):
    pass


class InvalidInput(CheckoutError):
    def __init__(self, *errors: FieldError) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors

    @classmethod
    def field(cls, field: str, message: str) -> InvalidInput:
        return cls(FieldError(field, message))


class Conflict(CheckoutError):
    pass


class CartNotOpen(Conflict):
    pass


class CartEmpty(Conflict):
    pass


class CheckoutCompleted(Conflict):
    pass


class IdempotencyKeyReuse(Conflict):
    pass
