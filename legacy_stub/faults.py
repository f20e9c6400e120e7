"""Faults on demand: latency, injected server errors and random payment declines.

`FaultInjector` holds the current `FaultSettings` (replaced whole by `PUT /_faults`) and
the random source; `FaultMiddleware` applies latency and injected errors to the contract
routes only.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from legacy_stub.config import LegacySettings, Millis, Rate
from legacy_stub.problems import problem
from legacy_stub.schemas import invalid_input

Sleep = Callable[[float], Awaitable[None]]
CONTRACT_PREFIXES = ("/carts", "/checkouts", "/orders")


class FaultSettings(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    latency_ms: Millis
    latency_jitter_ms: Millis
    error_rate: Rate
    decline_rate: Rate

    @classmethod
    def from_settings(cls, settings: LegacySettings) -> FaultSettings:
        return cls(
            latency_ms=settings.latency_ms, latency_jitter_ms=settings.latency_jitter_ms,
            error_rate=settings.error_rate, decline_rate=settings.decline_rate,
        )


class FaultInjector:
    """Draws the faults; every draw comes from one seeded random source, under a lock."""

    def __init__(
        self, settings: FaultSettings, seed: int | None = None, sleep: Sleep = asyncio.sleep
    ) -> None:
        self._settings = settings
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.sleep = sleep

    @property
    def settings(self) -> FaultSettings:
        return self._settings

    def update(self, changes: dict[str, Any]) -> FaultSettings:
        """Apply a partial change; raise `InvalidInput` and keep the old settings if bad."""
        with self._lock:
            merged = {**self._settings.model_dump(), **changes}
            try:
                self._settings = FaultSettings.model_validate(merged)
            except ValidationError as exc:
                raise invalid_input(exc) from exc
            return self._settings

    def delay_seconds(self) -> float:
        with self._lock:
            jitter = self._rng.uniform(0, self._settings.latency_jitter_ms)
            return (self._settings.latency_ms + jitter) / 1000

    def should_fail(self) -> bool:
        return self._draw(self._settings.error_rate)

    def should_decline(self) -> bool:
        return self._draw(self._settings.decline_rate)

    def _draw(self, rate: float) -> bool:
        with self._lock:
            return self._rng.random() < rate


def is_contract_path(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in CONTRACT_PREFIXES)


class FaultMiddleware:
    """Delays contract requests, then fails the unlucky ones with a 500 problem."""

    def __init__(self, app: ASGIApp, injector: FaultInjector) -> None:
        self.app = app
        self.injector = injector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_contract_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        delay = self.injector.delay_seconds()
        if delay > 0:
            await self.injector.sleep(delay)
        if self.injector.should_fail():
            response = problem(
                500, "injected-fault", "Injected fault",
                "The legacy stub injected this error (error_rate).", scope["path"],
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
