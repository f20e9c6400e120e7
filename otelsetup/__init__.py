"""OpenTelemetry tracing for the proxy, the checkout core and the legacy stub (the `[otel]`
extra), off unless a service's own setting turns it on: `STRANGLER_OTEL`,
`CHECKOUT_CORE_OTEL`, `LEGACY_STUB_OTEL`.

This module imports nothing of opentelemetry: a service asks it whether tracing is on
(`enabled`) and whether it can run (`problem`), and only then imports `otelsetup.provider`
(the TracerProvider from the standard OTEL_* variables) or `otelsetup.asgi` (the server
spans of the core and the stub). docs/deploy.md, "Tracing", says how to run it.
"""

from __future__ import annotations

import importlib.util
import os

EXTRA = "pip install 'checkout-strangler[otel]'"
# What the services use of the extra (opentelemetry-proto comes with the exporter).
MODULES = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http",
           "opentelemetry.instrumentation.asgi")


class TracingUnavailable(RuntimeError):
    """Tracing is on, but the `[otel]` extra is not installed."""


def enabled(switch: bool) -> bool:
    """A service's switch, unless the standard OTEL_SDK_DISABLED=true turns tracing off."""
    return switch and os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"


def problem(setting: str) -> str | None:
    """Why tracing, turned on by `setting` (an environment variable's name), cannot run:
    the extra is missing; else None."""
    if all(_importable(name) for name in MODULES):
        return None
    return (f"{setting} is on but the OpenTelemetry extra is not installed: {EXTRA} "
            f"(or set {setting}=off)")


def require(setting: str) -> None:
    """Raise TracingUnavailable when tracing cannot run (`problem`)."""
    message = problem(setting)
    if message is not None:
        raise TracingUnavailable(message)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False
