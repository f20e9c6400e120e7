"""OpenTelemetry tracing of the proxy (the `[otel]` extra), when `STRANGLER_OTEL` is on.

Only `proxy.main.create_app` imports this module, and only with tracing on: with it off,
nothing of opentelemetry is loaded and the hot path is the plain `ProxyApp`
(`tests/integration/test_tracing.py` checks both). With it on, three pieces wrap the app
without changing it:

- `TracedProxyApp` wraps the ASGI app: per proxied request (admin requests are not traced) a
  SERVER span `{method} {route}`, child of the client's W3C `traceparent` when it sent one,
  with the stable HTTP semantic-convention attributes; it sets
  `proxy.trace_context.CURRENT_TRACE_ID` for the logs;
- `TracedUpstream` replaces each backend's `Upstream`: a CLIENT span per attempt (a failover
  makes two: the core's, failed, and legacy's), whose context goes upstream as
  `traceparent`/`tracestate` in place of whatever the client sent, so the backend continues
  the trace under the proxy's span. It ends when the response's last byte is relayed;
- `DecisionEvents`, an outcome observer, records the routing decision on the server span as
  a `feature_flag.evaluation` event (OpenTelemetry's feature-flag semantic conventions):
  the funnel is the flag, the backend its variant.

Spans go out over OTLP HTTP through a BatchSpanProcessor (a background thread), configured
by the standard OTEL_* variables (`otelsetup.provider`); what is left is exported at
shutdown. docs/deploy.md, "Tracing", says how to run it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from admin.access import is_admin_path, is_dashboard_path, on_port
from control.decision import Backend, Reason
from control.rules import RuleSet
from otelsetup.provider import tracer_provider
from proxy.context import normalize_path
from proxy.forward import BackendConfig, RequestBody, Upstream, UpstreamError
from proxy.h1client import Response
from proxy.outcome import RequestOutcome
from proxy.trace_context import CURRENT_TRACE_ID

if TYPE_CHECKING:
    from proxy.app import ProxyApp
    from proxy.runtime import ProxyRuntime

DEFAULT_SERVICE_NAME = "strangler-proxy"
PROVIDER_NAME = "checkout-strangler"
INSTRUMENTATION = "checkout_strangler.proxy"
EVALUATION_EVENT = "feature_flag.evaluation"

# The proxy's reasons as OpenTelemetry's feature_flag.result.reason values; the original
# goes in strangler.decision.reason. DEFAULT with no rules loaded at all is "static".
FLAG_REASONS: dict[Reason, str] = {
    Reason.KILL_SWITCH: "disabled",  # the funnel (or everything) is switched off: legacy
    Reason.OWNER: "targeting_match",  # the id the path names decides
    Reason.STICKY: "cached",  # the unit's checkout in flight keeps its backend
    Reason.RULE: "split",  # the bucket of the unit against the rule's percentage
    Reason.DEFAULT: "default",  # no rule matched
    Reason.FAILOVER: "error",  # the core could not be reached: legacy served
    Reason.ERROR: "error",  # routing failed, or the control state is too old
}
NO_RULES = "none"

# The checkout contract's routes (docs/design.md), by segments with ids as "*".
_ROUTES: dict[tuple[str, ...], str] = {
    ("carts",): "/carts",
    ("carts", "*"): "/carts/{cart_id}",
    ("carts", "*", "items"): "/carts/{cart_id}/items",
    ("carts", "*", "items", "*"): "/carts/{cart_id}/items/{sku}",
    ("carts", "*", "checkout"): "/carts/{cart_id}/checkout",
    ("checkouts", "*"): "/checkouts/{checkout_id}",
    ("checkouts", "*", "orders"): "/checkouts/{checkout_id}/orders",
    ("orders", "*"): "/orders/{order_id}",
    ("healthz",): "/healthz",
    ("openapi.yaml",): "/openapi.yaml",
}
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE",
                      "PATCH"})
_TRACE_HEADERS = frozenset({"traceparent", "tracestate"})


# --------------------------------------------------------------------------------------------
# Per request
# --------------------------------------------------------------------------------------------

class _RequestTrace:
    """The traced request in the current task: its server span, the client spans whose
    response is still streaming, and what the outcome said about errors."""

    __slots__ = ("clients", "error_type", "span")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.clients: list[Span] = []
        self.error_type: str | None = None

    def end_clients(self) -> None:
        for span in self.clients:
            span.end()
        self.clients.clear()


_CURRENT: ContextVar[_RequestTrace | None] = ContextVar("strangler_otel_request", default=None)


class _HeaderGetter(Getter[list[tuple[bytes, bytes]]]):
    """W3C trace context from ASGI's raw header list (lower-case names)."""

    def get(self, carrier: list[tuple[bytes, bytes]], key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [v.decode("latin-1") for k, v in carrier if k == name]
        return values or None

    def keys(self, carrier: list[tuple[bytes, bytes]]) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier]


_GETTER = _HeaderGetter()


def route_template(path: str, prefixes: tuple[str, ...] = ()) -> str | None:
    """The contract route a path is an instance of (`/carts/{cart_id}/items/{sku}`), behind
    one of the funnels' path `prefixes` (the first that fits: longest first) or none; None
    for any other path, so that a span name never carries an id."""
    path = normalize_path(path)
    route = _ROUTES.get(_shape(path))
    if route is not None:
        return route
    for prefix in prefixes:
        if path.startswith(prefix + "/"):
            route = _ROUTES.get(_shape(path[len(prefix):]))
            if route is not None:
                return prefix + route
    return None


def _shape(path: str) -> tuple[str, ...]:
    """`/carts/c1/items/s1` -> ("carts", "*", "items", "*"); () with an empty segment."""
    segments = path[1:].split("/")
    if "" in segments:
        return ()
    return tuple(s if i % 2 == 0 else "*" for i, s in enumerate(segments))


def _host_port(value: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]:port` -> (host, port or None)."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = value.partition(":") if value.count(":") == 1 else (value, "", "")
    return host, int(port) if port.isdigit() else None


def unit_hash(unit: str) -> str:
    """feature_flag.context.id: a stable digest of the sticky unit (never the unit itself,
    which is the customer's session cookie)."""
    return hashlib.blake2b(unit.encode(), digest_size=8).hexdigest()


class TracedProxyApp:
    """The proxy's ASGI app with a server span around every proxied request."""

    def __init__(self, app: ProxyApp, provider: TracerProvider) -> None:
        self.app = app
        self.rt: ProxyRuntime = app.rt
        self.provider = provider
        self.tracer = provider.get_tracer(INSTRUMENTATION)
        self.propagator = TraceContextTextMapPropagator()
        self._prefixes: tuple[RuleSet | None, tuple[str, ...]] = (None, ())
        tracer = self.tracer
        self.rt.wrap_upstreams(lambda upstream: TracedUpstream(upstream.config, tracer))
        self.rt.observers.append(DecisionEvents(self.rt))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http" and self._proxied(scope):
            await self._traced(scope, receive, send)
        elif kind == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
        else:
            await self.app(scope, receive, send)

    def _proxied(self, scope: dict[str, Any]) -> bool:
        """What `ProxyApp.__call__` sends down the hot path (not the admin surface)."""
        admin_port = self.app.admin_port
        if admin_port is not None and on_port(scope, admin_port):
            return False
        path = scope["path"]
        return not is_admin_path(path) and not (admin_port is None and is_dashboard_path(path))

    def _lifespan_send(self, send: Any) -> Callable[[dict[str, Any]], Any]:
        async def lifespan_send(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.shutdown.complete":  # export what is left
                await asyncio.to_thread(self.provider.shutdown)
            await send(message)
        return lifespan_send

    def route(self, path: str) -> str | None:
        rules = self.rt.snapshot.rules
        if rules is not self._prefixes[0]:
            prefixes = {f.path_prefix for f in rules.funnels if f.path_prefix} \
                if rules is not None else set()
            self._prefixes = (rules, tuple(sorted(prefixes, key=len, reverse=True)))
        return route_template(path, self._prefixes[1])

    def _attributes(self, scope: dict[str, Any], method: str,
                    route: str | None) -> dict[str, AttributeValue]:
        attributes: dict[str, AttributeValue] = {
            "http.request.method": method if method in _METHODS else "_OTHER",
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
        }
        if method not in _METHODS:
            attributes["http.request.method_original"] = method
        if route is not None:
            attributes["http.route"] = route
        query = scope.get("query_string")
        if query:
            attributes["url.query"] = query.decode("latin-1")
        host = user_agent = forwarded_for = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")
            elif name == b"x-forwarded-for":
                forwarded_for = value.decode("latin-1")
        server = scope.get("server")
        address, port = _host_port(host) if host else (server[0], server[1]) if server else (
            None, None)
        if address:
            attributes["server.address"] = address
        if port is not None:
            attributes["server.port"] = port
        if user_agent is not None:
            attributes["user_agent.original"] = user_agent
        client = scope.get("client")
        peer = client[0] if client else None
        if peer:
            attributes["client.address"] = client_address = self._client_address(
                peer, forwarded_for)
            if client_address != peer:  # through a trusted proxy: say which one
                attributes["network.peer.address"] = peer
        return attributes

    def _client_address(self, peer: str, forwarded_for: str | None) -> str:
        """The client as the proxy believes it: the peer, or, from a trusted proxy, the last
        address of X-Forwarded-For that is not one of the trusted proxies."""
        trusted = self.rt.trusted
        if forwarded_for is None or not trusted.trusts(peer):
            return peer
        for entry in reversed(forwarded_for.split(",")):
            address = entry.strip()
            if address and not trusted.trusts(address):
                return address
        return peer

    async def _traced(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        method: str = scope["method"]
        route = self.route(scope["path"])
        shown = method if method in _METHODS else "HTTP"
        parent = self.propagator.extract(scope["headers"], getter=_GETTER)
        span = self.tracer.start_span(
            f"{shown} {route}" if route else shown, context=parent, kind=SpanKind.SERVER,
            attributes=self._attributes(scope, method, route))
        request = _RequestTrace(span)
        request_token = _CURRENT.set(request)
        context_token = otel_context.attach(trace.set_span_in_context(span, parent))
        trace_id_token = CURRENT_TRACE_ID.set(
            trace.format_trace_id(span.get_span_context().trace_id))
        status: int | None = None

        async def traced_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                request.end_clients()  # the upstream's last byte is relayed
            await send(message)

        try:
            await self.app(scope, receive, traced_send)
        except BaseException as exc:
            span.record_exception(exc)
            request.error_type = request.error_type or type(exc).__qualname__
            raise
        finally:
            request.end_clients()
            error_type = request.error_type  # an exception, or a response broken off
            if status is not None:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    error_type = str(status)
            if error_type is not None:
                span.set_attribute("error.type", error_type)
                span.set_status(Status(StatusCode.ERROR))
            span.end()
            CURRENT_TRACE_ID.reset(trace_id_token)
            otel_context.detach(context_token)
            _CURRENT.reset(request_token)


def _trace_headers(context: SpanContext) -> list[tuple[str, str]]:
    """W3C trace context for an upstream request (what TraceContextTextMapPropagator.inject
    writes, without its context lookups)."""
    ids = f"{context.trace_id:032x}-{context.span_id:016x}"
    headers = [("traceparent", f"00-{ids}-{context.trace_flags:02x}")]
    if context.trace_state:
        headers.append(("tracestate", context.trace_state.to_header()))
    return headers


class TracedUpstream(Upstream):
    """An upstream whose every request is a CLIENT span, its context sent as `traceparent`
    (and `tracestate`) in place of the client's."""

    def __init__(self, config: BackendConfig, tracer: trace.Tracer) -> None:
        super().__init__(config)
        host, port = self._host_port
        self.tracer = tracer
        self.origin = f"http://{host}:{port}{self.base}"
        self._attributes: dict[str, AttributeValue] = {
            "server.address": host, "server.port": port, "network.protocol.version": "1.1",
            "strangler.backend": config.name,
        }

    async def send(
        self, method: str, path_qs: str, headers: list[tuple[str, str]],
        body: RequestBody | None,
    ) -> Response:
        request = _CURRENT.get()
        if request is not None and not request.span.is_recording():
            # not sampled: no client span; the backend gets the request's (unsampled)
            # context, and the decision not to sample with it
            headers = [(n, v) for n, v in headers if n not in _TRACE_HEADERS]
            headers.extend(_trace_headers(request.span.get_span_context()))
            return await super().send(method, path_qs, headers, body)
        span = self.tracer.start_span(
            method if method in _METHODS else "HTTP", kind=SpanKind.CLIENT, attributes={
                **self._attributes, "url.full": self.origin + path_qs,
                "http.request.method": method if method in _METHODS else "_OTHER",
            })
        headers = [(n, v) for n, v in headers if n not in _TRACE_HEADERS]
        headers.extend(_trace_headers(span.get_span_context()))
        try:
            response = await super().send(method, path_qs, headers, body)
        except UpstreamError as exc:
            span.set_attribute("error.type", exc.kind)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            span.end()
            raise
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            span.end()
            raise
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 400:
            span.set_attribute("error.type", str(response.status))
            span.set_status(Status(StatusCode.ERROR))
        if request is not None:  # ends when the response's last byte is relayed
            request.clients.append(span)
        else:
            span.end()
        return response


class DecisionEvents:
    """An outcome observer: the routing decision, as a `feature_flag.evaluation` event on
    the request's server span (run by `ProxyRuntime.observe`, in the request's task)."""

    def __init__(self, runtime: ProxyRuntime) -> None:
        self.rt = runtime

    def observe(self, outcome: RequestOutcome) -> None:
        request = _CURRENT.get()
        if request is None or not request.span.is_recording():  # not traced, or not sampled
            return
        if outcome.reason is Reason.FAILOVER and outcome.backend is Backend.CORE:
            return  # the core's half of a failover: its client span tells it
        version = getattr(outcome, "rules_version", None) or self._rules_version()
        reason = FLAG_REASONS[outcome.reason]
        if outcome.reason is Reason.DEFAULT and version == NO_RULES:
            reason = "static"  # no rules at all: everything goes to legacy
        event: dict[str, AttributeValue] = {
            "feature_flag.key": outcome.funnel,
            "feature_flag.provider.name": PROVIDER_NAME,
            "feature_flag.result.variant": outcome.backend.value,
            "feature_flag.result.reason": reason,
            "feature_flag.version": version,
            "feature_flag.context.id": unit_hash(outcome.unit),
            "strangler.decision.reason": outcome.reason.value,
        }
        rule = getattr(outcome, "rule", None)
        if rule:
            event["strangler.decision.rule"] = rule
        span = request.span
        span.add_event(EVALUATION_EVENT, event)
        span.set_attributes({
            "strangler.funnel": outcome.funnel, "strangler.backend": outcome.backend.value,
            "strangler.decision.reason": outcome.reason.value,
            "strangler.country": outcome.country,
        })
        if outcome.upstream_error is not None:  # e.g. broke off after the answer started
            request.error_type = outcome.upstream_error

    def _rules_version(self) -> str:
        rules = self.rt.snapshot.rules
        return rules.version if rules is not None else NO_RULES


def instrument(app: ProxyApp) -> TracedProxyApp:
    """`app` with tracing, exporting as the OTEL_* variables say."""
    return TracedProxyApp(app, tracer_provider(DEFAULT_SERVICE_NAME))
