"""The Starlette entry point: `create_app(settings)` builds one self-contained core app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import otelsetup
from checkout_core.adapters.fake_gateway import FakeGateway
from checkout_core.bootstrap import Core, bootstrap
from checkout_core.config import CoreSettings
from checkout_core.web import api, ops
from checkout_core.web.faults import FaultMiddleware, fault_routes
from checkout_core.web.problems import BACKEND_HEADER, BACKEND_NAME, EXCEPTION_HANDLERS


class BackendNameMiddleware:
    """Adds `X-Backend-Name: core` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != BACKEND_HEADER.lower().encode()]
                headers.append((BACKEND_HEADER.lower().encode(), BACKEND_NAME.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_header)


def _routes(core: Core) -> list[BaseRoute]:
    routes: list[BaseRoute] = [*api.ROUTES, *ops.ROUTES, *fault_routes(core.faults)]
    if core.downstream_app is not None:
        routes.append(Mount("/_downstream", app=core.downstream_app))
    return routes


def _tracing(settings: CoreSettings) -> list[Middleware]:
    """With CHECKOUT_CORE_OTEL on, the OpenTelemetry server span of each request, first."""
    if not otelsetup.enabled(settings.otel):
        return []
    otelsetup.require("CHECKOUT_CORE_OTEL")
    from otelsetup.asgi import middleware

    return middleware("checkout-core")


def create_app(
    settings: CoreSettings | None = None, *, gateway: FakeGateway | None = None
) -> Starlette:
    """The core app; `gateway` replaces the configured fake payment gateway (tests)."""
    settings = settings or CoreSettings()
    tracing = _tracing(settings)
    core = bootstrap(settings, gateway)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await core.start()
        try:
            yield
        finally:
            await core.stop()

    app = Starlette(
        routes=_routes(core),
        middleware=[
            *tracing,
            Middleware(BackendNameMiddleware),
            Middleware(FaultMiddleware, switch=core.faults),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.core = core
    return app
