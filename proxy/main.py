"""Build the proxy app from settings."""

from __future__ import annotations

from proxy.app import ProxyApp
from proxy.config import ProxySettings
from proxy.runtime import ProxyRuntime


def create_app(settings: ProxySettings | None = None) -> ProxyApp:
    return ProxyApp(ProxyRuntime(settings or ProxySettings()))
