"""Server spans for the checkout core and the legacy stub: OpenTelemetry's ASGI
instrumentation as the outermost Starlette middleware, so each backend continues the
trace whose `traceparent` the proxy sends (the proxy's client span is the parent).

Spans are named `{method} {route}` with the matched route's template
(`POST /carts/{cart_id}/items`), and carry the stable HTTP semantic conventions
(`OTEL_SEMCONV_STABILITY_OPT_IN=http` unless set otherwise).
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otelsetup.provider import tracer_provider


def middleware(default_service_name: str) -> list[Middleware]:
    """The middleware to put first in a Starlette app's list."""
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")  # read once, on first use
    provider = tracer_provider(default_service_name)
    return [
        Middleware(OpenTelemetryMiddleware, tracer_provider=provider,
                   default_span_details=_method_only, exclude_spans=["receive", "send"]),
        Middleware(RouteNamer),
    ]


def _method_only(scope: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The span's name until the route is known: never the path, which holds ids."""
    return str(scope.get("method", "HTTP")), {}


def route_of(scope: Scope) -> str | None:
    """The template of the route Starlette matched (`/carts/{cart_id}`), under the app's
    root path; None when no route matched."""
    template = getattr(scope.get("route"), "path_format", None)
    return f"{scope.get('root_path', '')}{template}" if isinstance(template, str) else None


class RouteNamer:
    """Inside the instrumentation: when the response starts (the app has routed the
    request), names the server span `{method} {route}` and sets `http.route`. Not later: the
    instrumentation ends its span with the response's last byte."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        span = trace.get_current_span()

        async def naming_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = route_of(scope)
                if route is not None:
                    span.update_name(f"{scope['method']} {route}")
                    span.set_attribute("http.route", route)
            await send(message)

        await self.app(scope, receive, naming_send)
