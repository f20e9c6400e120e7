"""The stub's payment gateway: `tok_decline` always fails, the rest by the decline rate."""

from __future__ import annotations

import secrets
from typing import Protocol

from legacy_stub.models import Declined, Payment

DECLINE_TOKEN = "tok_decline"


class DeclineDraw(Protocol):
    def should_decline(self) -> bool: ...


class PaymentGateway(Protocol):
    def authorize(self, token: str, amount: int, currency: str) -> Payment | Declined: ...


class StubGateway:
    """Approves every `tok_…` token unless it is `tok_decline` or the random draw declines."""

    def __init__(self, draw: DeclineDraw) -> None:
        self._draw = draw

    def authorize(self, token: str, amount: int, currency: str) -> Payment | Declined:
        if token == DECLINE_TOKEN:
            return Declined("The card was declined.")
        if self._draw.should_decline():
            return Declined("The issuer declined the payment.")
        return Payment(id=f"pay_{secrets.token_hex(12)}", status="authorized", amount=amount)
