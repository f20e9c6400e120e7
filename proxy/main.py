"""Build the proxy app from settings."""

from __future__ import annotations

from proxy.app import ProxyApp
from proxy.config import ProxySettings
from proxy.runtime import ProxyRuntime
from proxy.server_protocol import GuardedHttpToolsProtocol


def create_app(settings: ProxySettings | None = None) -> ProxyApp:
    return ProxyApp(ProxyRuntime(settings or ProxySettings()))


# How uvicorn must run the proxy: the upstream's Date/Server pass through untouched,
# X-Forwarded-For is judged by the proxy's own trusted_proxies, not by uvicorn, and the
# httptools protocol enforces the request-head limits of the app (proxy.server_protocol).
UVICORN_OPTIONS: dict[str, object] = {
    "server_header": False, "date_header": False, "proxy_headers": False,
    "http": GuardedHttpToolsProtocol,
}
