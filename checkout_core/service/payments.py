"""Charging through the gateway port without ever charging twice.

Every attempt uses the same gateway idempotency key. After a failed attempt the processor
reconciles before it retries: it looks the payment up by that key and, if the gateway has
one, that is the answer. A lookup that itself fails means the outcome is unknown, so that
attempt does not charge. Waits between attempts are bounded exponential backoff with full
jitter. If nothing is established after the last attempt, `PaymentUnavailable` is raised and
a retry of the same request (same idempotency key) reconciles first.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from enum import Enum

from checkout_core.domain.errors import PaymentUnavailable
from checkout_core.retry import Backoff
from checkout_core.service.ports import (
    ChargeRequest,
    GatewayError,
    GatewayTimeout,
    PaymentGateway,
    PaymentResult,
)

GatewayObserver = Callable[[str, str], None]
"""Called with (operation, result) after every gateway call, for metrics."""


class _Unknown(Enum):
    UNKNOWN = "unknown"


UNKNOWN = _Unknown.UNKNOWN


def _ignore(operation: str, result: str) -> None:
    return None


class PaymentProcessor:
    def __init__(
        self,
        gateway: PaymentGateway,
        backoff: Backoff,
        call_timeout_seconds: float,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        observe: GatewayObserver = _ignore,
    ) -> None:
        self.gateway = gateway
        self.backoff = backoff
        self.call_timeout = call_timeout_seconds
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.observe = observe

    async def charge(
        self, request: ChargeRequest, *, reconcile_first: bool = False
    ) -> PaymentResult:
        """Authorize `request` once; a declined result is returned, not raised."""
        must_reconcile = reconcile_first
        for attempt in range(self.backoff.max_attempts):
            await self._wait(attempt)
            if must_reconcile:
                found = await self.reconcile(request.idempotency_key)
                if found is UNKNOWN:
                    continue
                if found is not None:
                    return found
            try:
                return await self._authorize(request)
            except GatewayError:
                must_reconcile = True
        await self._wait(self.backoff.max_attempts)
        found = await self.reconcile(request.idempotency_key)
        if isinstance(found, PaymentResult):
            return found
        raise PaymentUnavailable(
            "the payment gateway did not confirm the payment; retrying with the same "
            "Idempotency-Key is safe"
        )

    async def reconcile(self, idempotency_key: str) -> PaymentResult | _Unknown | None:
        """The gateway's payment for this key, None if it has none, UNKNOWN if it cannot say."""
        try:
            async with asyncio.timeout(self.call_timeout):
                found = await self.gateway.lookup(idempotency_key)
        except (GatewayError, TimeoutError) as exc:
            self.observe("lookup", _error_name(exc))
            return UNKNOWN
        self.observe("lookup", "found" if found else "not_found")
        return found

    async def _authorize(self, request: ChargeRequest) -> PaymentResult:
        try:
            async with asyncio.timeout(self.call_timeout):
                result = await self.gateway.authorize(request)
        except (GatewayError, TimeoutError) as exc:
            self.observe("authorize", _error_name(exc))
            if isinstance(exc, TimeoutError):
                raise GatewayTimeout("no answer within the call timeout") from exc
            raise
        self.observe("authorize", result.status)
        return result

    async def _wait(self, attempt: int) -> None:
        delay = self.backoff.delay(attempt, self.rng)
        if delay > 0:
            await self.sleep(delay)


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, (GatewayTimeout, TimeoutError)):
        return "timeout"
    return "unavailable"
