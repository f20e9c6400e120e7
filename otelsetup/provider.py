"""The TracerProvider of a service, from the standard OTEL_* variables (the `[otel]` extra).

- resource: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` (service.name defaults to the
  service's own: strangler-proxy, checkout-core, legacy-stub);
- sampler: `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (default
  parentbased_always_on: a client's sampled `traceparent` is followed);
- exporter: `OTEL_TRACES_EXPORTER`, `otlp` (the default: OTLP over HTTP with protobuf,
  `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`, `..._HEADERS`, `..._TIMEOUT`, `..._COMPRESSION`),
  `console` or `none`, through a BatchSpanProcessor (`OTEL_BSP_*`) that exports from a
  background thread.
"""

from __future__ import annotations

import os

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter


class TracingConfigError(ValueError):
    """The OTEL_* variables ask for something these services cannot do."""


def tracer_provider(default_service_name: str) -> TracerProvider:
    """A TracerProvider of the caller's own, not the global one (several proxies may run in
    one process, as in the tests). Its atexit hook exports what is left at exit."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: default_service_name}))
    provider = TracerProvider(resource=resource)
    for exporter in span_exporters():
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def span_exporters() -> list[SpanExporter]:
    """OTEL_TRACES_EXPORTER: `otlp` (the default), `console`, `none`, or several of them
    separated by commas."""
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")
             if n.strip()] or ["otlp"]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
            if protocol.strip().lower() != "http/protobuf":
                raise TracingConfigError(
                    f"OTLP protocol {protocol!r}: spans are exported over HTTP only "
                    "(http/protobuf, port 4318 by default)")
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name != "none":
            raise TracingConfigError(f"OTEL_TRACES_EXPORTER={name}: expected otlp, console "
                                     "or none")
    return exporters
