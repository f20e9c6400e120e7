"""Wiring of the legacy stub: `create_app` builds the Starlette app from settings."""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import otelsetup
from legacy_stub.admin import admin_routes
from legacy_stub.catalog import load_catalog
from legacy_stub.config import LegacySettings
from legacy_stub.faults import FaultInjector, FaultMiddleware, FaultSettings, Sleep
from legacy_stub.payments import StubGateway
from legacy_stub.problems import BACKEND_HEADER, BACKEND_NAME, exception_handlers
from legacy_stub.routes import ContractEndpoints
from legacy_stub.service import CheckoutService
from legacy_stub.store import InMemoryStore


class BackendNameMiddleware:
    """Adds `X-Backend-Name: legacy` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_named(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[BACKEND_HEADER] = BACKEND_NAME
            await send(message)

        await self.app(scope, receive, send_named)


def _tracing(settings: LegacySettings) -> list[Middleware]:
    """With LEGACY_STUB_OTEL on, the OpenTelemetry server span of each request, first."""
    if not otelsetup.enabled(settings.otel):
        return []
    otelsetup.require("LEGACY_STUB_OTEL")
    from otelsetup.asgi import middleware

    return middleware("legacy-stub")


def create_app(settings: LegacySettings | None = None, *, sleep: Sleep | None = None) -> Starlette:
    """The legacy monolith's stand-in. `sleep` replaces `asyncio.sleep` for latency (tests)."""
    settings = settings or LegacySettings()
    injector = FaultInjector(
        FaultSettings.from_settings(settings), settings.seed, sleep or asyncio.sleep
    )
    service = CheckoutService(load_catalog(), InMemoryStore(), StubGateway(injector))
    app = Starlette(
        routes=[*ContractEndpoints(service).routes(), *admin_routes(injector)],
        middleware=[
            *_tracing(settings),
            Middleware(BackendNameMiddleware),
            Middleware(FaultMiddleware, injector=injector),
        ],
        exception_handlers=exception_handlers(),
    )
    app.state.faults = injector
    return app
