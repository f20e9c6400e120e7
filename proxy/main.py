"""Build the proxy app from settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

import logformat
import otelsetup
from proxy.app import ProxyApp
from proxy.config import ProxySettings
from proxy.runtime import ProxyRuntime
from proxy.server_protocol import GuardedHttpToolsProtocol
from proxy.trace_context import CURRENT_TRACE_ID

if TYPE_CHECKING:
    from proxy.tracing import TracedProxyApp


def create_app(settings: ProxySettings | None = None) -> ProxyApp | TracedProxyApp:
    """The proxy's ASGI app; with tracing on (`STRANGLER_OTEL`), wrapped by
    `proxy.tracing`, which is imported only then."""
    settings = settings or ProxySettings()
    # JSON log lines written while a request is handled carry its trace id, when known
    logformat.add_context_field("trace_id", CURRENT_TRACE_ID)
    if not otelsetup.enabled(settings.otel):
        return ProxyApp(ProxyRuntime(settings))
    otelsetup.require("STRANGLER_OTEL")
    from proxy.tracing import instrument

    return instrument(ProxyApp(ProxyRuntime(settings)))


# How uvicorn must run the proxy: the upstream's Date/Server pass through untouched,
# X-Forwarded-For is judged by the proxy's own trusted_proxies, not by uvicorn, and the
# httptools protocol enforces the request-head limits of the app (proxy.server_protocol).
UVICORN_OPTIONS: dict[str, object] = {
    "server_header": False, "date_header": False, "proxy_headers": False,
    "http": GuardedHttpToolsProtocol,
}
