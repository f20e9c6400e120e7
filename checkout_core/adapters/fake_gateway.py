"""A payment gateway in memory that behaves like a real provider.

It has latency; it declines `tok_decline` always and other tokens at the configured rate; it
times out before charging; and it has unknown outcomes: it charges, then the caller times out.
Like Stripe, by default it remembers each idempotency key and answers a repeated `authorize`
with the first result; `honours_idempotency_keys=False` makes it a naive provider that charges
again, which is how the tests prove the core never relies on that.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from checkout_core.ids import PAYMENT, new_id
from checkout_core.service.ports import (
    ChargeRequest,
    GatewayTimeout,
    GatewayUnavailable,
    PaymentResult,
)

Fault = Literal["timeout", "charge_then_timeout", "unavailable"]
DECLINE_TOKEN = "tok_decline"


@dataclass(frozen=True, slots=True)
class FakeGatewayConfig:
    latency_seconds: float = 0.0
    decline_rate: float = 0.0
    timeout_rate: float = 0.0
    unknown_rate: float = 0.0
    timeout_seconds: float = 0.05
    """How long a simulated timeout keeps the caller waiting."""
    honours_idempotency_keys: bool = True


@dataclass(frozen=True, slots=True)
class Charge:
    idempotency_key: str
    result: PaymentResult


class FakeGateway:
    def __init__(
        self,
        config: FakeGatewayConfig | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config or FakeGatewayConfig()
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.faults: deque[Fault | None] = deque()
        self.charges: list[Charge] = []
        self.authorize_calls: list[str] = []
        self.lookup_calls: list[str] = []

    def script(self, *faults: Fault | None) -> None:
        """Queue faults for the next `authorize` calls (None: behave normally), before rates."""
        self.faults.extend(faults)

    def authorized(self) -> list[Charge]:
        return [c for c in self.charges if c.result.status == "authorized"]

    async def authorize(self, request: ChargeRequest) -> PaymentResult:
        self.authorize_calls.append(request.idempotency_key)
        await self.sleep(self.config.latency_seconds)
        fault = self._next_fault()
        if fault == "unavailable":
            raise GatewayUnavailable("gateway refused the connection")
        if fault == "timeout":
            await self.sleep(self.config.timeout_seconds)
            raise GatewayTimeout("gateway did not answer")
        result = self._charge(request)
        if fault == "charge_then_timeout":
            await self.sleep(self.config.timeout_seconds)
            raise GatewayTimeout("gateway did not answer")
        return result

    async def lookup(self, idempotency_key: str) -> PaymentResult | None:
        self.lookup_calls.append(idempotency_key)
        await self.sleep(self.config.latency_seconds)
        for charge in self.charges:
            if charge.idempotency_key == idempotency_key:
                return charge.result
        return None

    def _next_fault(self) -> Fault | None:
        if self.faults:
            return self.faults.popleft()
        draw = self.rng.random()
        if draw < self.config.timeout_rate:
            return "timeout"
        if draw < self.config.timeout_rate + self.config.unknown_rate:
            return "charge_then_timeout"
        return None

    def _charge(self, request: ChargeRequest) -> PaymentResult:
        if self.config.honours_idempotency_keys:
            for charge in self.charges:
                if charge.idempotency_key == request.idempotency_key:
                    return charge.result
        result = self._decide(request)
        self.charges.append(Charge(request.idempotency_key, result))
        return result

    def _decide(self, request: ChargeRequest) -> PaymentResult:
        reason = None
        if request.token == DECLINE_TOKEN:
            reason = "card_declined"
        elif self.rng.random() < self.config.decline_rate:
            reason = "insufficient_funds"
        status: Literal["authorized", "declined"] = "declined" if reason else "authorized"
        return PaymentResult(new_id(PAYMENT), status, request.amount, request.currency, reason)
