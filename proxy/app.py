"""The proxy's ASGI application: decide, forward, measure.

A raw ASGI callable on the hot path (no routing framework, no middleware stack): the
decision takes a few microseconds, the rest is streaming bytes between two sockets.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from admin.access import is_admin_path, is_dashboard_path, on_port
from admin.app import create_admin_app
from control.decision import Backend, Decision, Reason, RequestContext, decide, is_killed
from proxy.config import ProxySettings
from proxy.context import extract_context, normalize_path, quote_path
from proxy.forward import (
    BodyTooLarge,
    ClientGone,
    RequestBody,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from proxy.h1client import Response
from proxy.headers import downstream_response_headers, upstream_request_headers
from proxy.hygiene import BodyTimeout, framing_problem, timed_receive
from proxy.outcome import RequestOutcome
from proxy.override import apply_override, forced_backend
from proxy.problems import send_problem
from proxy.runtime import ProxyRuntime
from proxy.server_protocol import HttpLimits

log = logging.getLogger("strangler.proxy")

CLOSE = [(b"connection", b"close")]


class ForwardFailed(Exception):
    """The upstream failed; `decision` is the one in force when it did (maybe FAILOVER)."""

    def __init__(self, error: UpstreamError, decision: Decision) -> None:
        super().__init__(str(error))
        self.error = error
        self.decision = decision

NO_BODY_STATUS = frozenset({204, 304})


class ProxyApp:
    def __init__(self, runtime: ProxyRuntime) -> None:
        self.rt = runtime
        settings = runtime.settings
        self.via = f"1.1 {settings.via_name}".encode()
        self.http_limits = HttpLimits(settings.max_header_bytes, settings.header_timeout)
        self.admin_port = settings.admin_port
        self.qa_secret = (
            settings.qa_override_secret.encode() if settings.qa_override_secret else None)
        self.max_state_age = settings.max_state_age
        self._stale = False
        self.admin_app = create_admin_app(
            store=runtime.store, metrics_text=runtime.metrics.render, health=self.health,
            rules=lambda: runtime.snapshot.rules,
            local_report=lambda: runtime.monitor.last_report, telemetry=runtime.telemetry,
            token=settings.admin_token, body_idle_timeout=settings.body_idle_timeout,
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if self.admin_port is not None and on_port(scope, self.admin_port):
                await self.admin(scope, receive, send)  # the admin port serves nothing else
            elif is_admin_path(path):
                if self.admin_port is None:
                    await self.admin(scope, receive, send)
                else:  # admin paths live on the admin port only
                    await send_problem(send, 404, "not-found", "no such path", path)
            elif self.admin_port is None and is_dashboard_path(path):
                await self.admin(scope, receive, send)  # else /dashboard is checkout traffic
            else:
                await self.proxy(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.rt.start()
                except Exception as exc:
                    log.exception("proxy failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.rt.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- admin -----------------------------------------------------------------------------

    async def admin(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Hand a request of the admin surface to the admin app, its path normalised
        (`//metrics` is `/metrics`)."""
        path = normalize_path(scope["path"])
        try:
            await self.admin_app({**scope, "path": path}, receive, send)
        except Exception:  # answered (500) by the admin app, re-raised for its server to log
            log.exception("admin request %s %s failed", scope["method"], path)

    def health(self) -> dict[str, Any]:
        """What /_strangler/healthz and /state answer: the runtime's state, "degraded"
        while the control state is stale."""
        state = self.rt.describe()
        if self.state_is_stale():
            state["status"] = "degraded"
        return state

    # -- the hot path ------------------------------------------------------------------------

    async def route(self, headers: list[tuple[bytes, bytes]], path: str) -> tuple[
        RequestContext, Decision
    ]:
        snapshot = self.rt.snapshot
        rules = snapshot.rules
        ctx = extract_context(rules, path, headers)
        if self.state_is_stale():  # fail safe: the kill switch may have changed unseen
            funnel = ctx.funnel.name if ctx.funnel is not None else None
            reason = Reason.KILL_SWITCH if is_killed(snapshot.kills, funnel) else Reason.ERROR
            return ctx, Decision(Backend.LEGACY, reason, rules.version if rules else "none")
        forced = forced_backend(headers, self.qa_secret)
        sticky = None
        if forced is None and ctx.funnel is not None and ctx.entity_id is None and (
            not ctx.unit_minted
        ):
            sticky = await self.rt.sticky.get(f"{ctx.funnel.name}:{ctx.unit}")
        return ctx, apply_override(decide(ctx, rules, snapshot.kills, sticky), forced)

    def _forwardable(self, path: str) -> bool:
        """Only the checkout routes reach the backends (not their ops endpoints such as the
        legacy stub's /_faults); an empty `forward_path_prefixes` forwards everything."""
        prefixes = self.rt.settings.forward_path_prefixes
        return not prefixes or any(path == p or path.startswith(p + "/") for p in prefixes)

    def state_is_stale(self) -> bool:
        """Whether the last successful read of the control state is older than
        `max_state_age`; logs each change."""
        if not self.max_state_age:
            return False
        age = self.rt.watcher.state_age()
        stale = age is not None and age > self.max_state_age
        if stale != self._stale:
            self._stale = stale
            if stale:
                log.error("control state is %.1f s old (max_state_age %s s): every request "
                          "goes to legacy (ERROR) until the store answers", age,
                          self.max_state_age)
            else:
                log.warning("control state is fresh again: routing by the rules resumes")
        return stale

    async def proxy(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = time.perf_counter()
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        problem = framing_problem(scope.get("http_version", "1.1"), headers)
        if problem is not None:
            log.warning("rejected %s %s: %s", scope["method"], scope["path"], problem)
            await send_problem(send, 400, "bad-request", problem, scope["path"], CLOSE)
            return
        try:
            ctx, decision = await self.route(headers, scope["path"])
        except Exception:  # the decision never takes a request down: legacy serves it
            log.exception("routing failed, sending to legacy")
            ctx = extract_context(None, scope["path"], headers)
            decision = Decision(Backend.LEGACY, Reason.ERROR, "none")
        if not self._forwardable(ctx.path):
            await self._reply_problem(send, ctx, decision, 404, "not-found",
                                      "no checkout route here", started, scope)
            return
        limit = self.rt.settings.max_body_bytes
        length = _content_length(headers)
        if length is not None and length > limit:
            await self._reply_problem(send, ctx, decision, 413, "body-too-large",
                                      f"request bodies are limited to {limit} bytes", started,
                                      scope)
            return
        await self._forward(scope, receive, send, ctx, decision, started)

    async def _forward(
        self, scope: dict[str, Any], receive: Any, send: Any, ctx: RequestContext,
        decision: Decision, started: float,
    ) -> None:
        method: str = scope["method"]
        headers = scope["headers"]
        body = _request_body(receive, headers, self.rt.settings)
        extra = [(b"x-checkout-session", ctx.unit.encode())] if ctx.unit_minted else []
        client = scope.get("client")
        upstream_headers = upstream_request_headers(
            headers, peer=client[0] if client else None, scheme=scope.get("scheme", "http"),
            via=self.via, trusted=self.rt.trusted, extra=extra,
        )
        qs = scope.get("query_string", b"")
        path_qs = quote_path(ctx.path) + ("?" + qs.decode("latin-1") if qs else "")
        try:
            response, decision = await self._send_with_failover(
                decision, ctx, method, path_qs, upstream_headers, body
            )
        except BodyTooLarge:
            await self._reply_problem(send, ctx, decision, 413, "body-too-large",
                                      "request body too large", started, scope)
            return
        except BodyTimeout:
            await self._reply_problem(send, ctx, decision, 408, "request-timeout",
                                      "the request body was not received in time", started,
                                      scope, extra=CLOSE)
            return
        except ClientGone:
            return
        except ForwardFailed as failed:
            exc, decision = failed.error, failed.decision
            status, slug, extra = _failure_status(exc)
            log.warning("%s %s -> %s failed: %s", method, ctx.path, decision.backend, exc)
            await self._reply_problem(send, ctx, decision, status, slug, str(exc), started, scope,
                                      upstream_error=exc.kind, extra=extra)
            return
        await self._stream_response(scope, send, ctx, decision, response, started)

    async def _send_with_failover(
        self, decision: Decision, ctx: RequestContext, method: str, path_qs: str,
        headers: list[tuple[str, str]], body: RequestBody | None,
    ) -> tuple[Response, Decision]:
        """Send to the decided backend; when the core cannot be reached and nothing was sent
        yet, send to legacy instead (FAILOVER), unless the request names a core id (OWNER):
        legacy cannot serve it. Raises ForwardFailed with the final decision."""
        try:
            return await self.rt.upstream(decision.backend).send(
                method, path_qs, headers, body), decision
        except UpstreamUnreachable as exc:
            if decision.backend is not Backend.CORE or decision.reason is Reason.OWNER or (
                body is not None and body.started
            ):
                raise ForwardFailed(exc, decision) from exc
            log.warning("core unreachable (%s): failing over to legacy", exc)
            self._count_core_failure(ctx, method, exc)
        except UpstreamError as exc:
            raise ForwardFailed(exc, decision) from exc
        decision = decision.failed_over()
        try:
            return await self.rt.upstream(Backend.LEGACY).send(
                method, path_qs, headers, body), decision
        except UpstreamError as exc:
            raise ForwardFailed(exc, decision) from exc

    def _count_core_failure(self, ctx: RequestContext, method: str, exc: UpstreamError) -> None:
        """The core failed a request that legacy then served: the failure is the core's,
        in the metrics and in the guardrails' error budget (as a FAILOVER, not a rule unit)."""
        self.rt.observe(RequestOutcome(
            funnel=ctx.funnel.name if ctx.funnel is not None else "-",
            country=ctx.country or "-", unit=ctx.unit, backend=Backend.CORE,
            reason=Reason.FAILOVER, method=method, path=ctx.path, status=503, duration=0.0,
            upstream_error=exc.kind, signals=(),
        ))

    async def _stream_response(
        self, scope: dict[str, Any], send: Any, ctx: RequestContext, decision: Decision,
        response: Response, started: float,
    ) -> None:
        status: int = response.status
        out = downstream_response_headers(response.raw_headers, self.via)
        out.extend(self._decision_headers(ctx, decision))
        error: str | None = None
        try:
            await send({"type": "http.response.start", "status": status, "headers": out})
            if scope["method"] == "HEAD" or status in NO_BODY_STATUS:
                await send({"type": "http.response.body", "body": b""})
            elif response.content_length is not None and response.content_length <= 65536:
                # a small body of known length: read it and send it in one message
                await send({"type": "http.response.body", "body": await response.read()})
            else:
                async for chunk in response.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except OSError as exc:  # client went away, or the upstream broke mid-body
            error = "reset"
            log.info("stream of %s aborted: %r", ctx.path, exc)
        except Exception as exc:
            error = "reset"
            log.warning("stream of %s aborted: %r", ctx.path, exc)
            raise
        finally:
            response.release()
            await self._finish(scope, ctx, decision, status, started, error)

    def _decision_headers(self, ctx: RequestContext, decision: Decision) -> list[
        tuple[bytes, bytes]
    ]:
        headers = [
            (b"x-checkout-backend", decision.backend.value.encode()),
            (b"x-checkout-decision", decision.header_value().encode()),
        ]
        if ctx.unit_minted:
            cookie = self.rt.session_cookie(ctx.unit)
            headers.append((b"set-cookie", cookie.encode()))
        return headers

    async def _reply_problem(
        self, send: Any, ctx: RequestContext, decision: Decision, status: int, slug: str,
        detail: str, started: float, scope: dict[str, Any], upstream_error: str | None = None,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        await send_problem(send, status, slug, detail, scope["path"],
                           self._decision_headers(ctx, decision) + (extra or []))
        await self._finish(scope, ctx, decision, status, started, upstream_error)

    async def _finish(
        self, scope: dict[str, Any], ctx: RequestContext, decision: Decision, status: int,
        started: float, upstream_error: str | None,
    ) -> None:
        funnel = ctx.funnel
        signals: tuple[str, ...] = ()
        method = scope["method"]
        if funnel is not None:
            signals = tuple(s.name for s in funnel.signals if s.matches(method, ctx.path, status))
            await self.rt.track_unit(funnel, ctx.unit, decision, status, signals)
        self.rt.observe(RequestOutcome(
            funnel=funnel.name if funnel is not None else "-",
            country=ctx.country or "-",
            unit=ctx.unit,
            backend=decision.backend,
            reason=decision.reason,
            method=method,
            path=ctx.path,
            status=status,
            duration=time.perf_counter() - started,
            upstream_error=upstream_error,
            signals=signals,
        ))


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _request_body(
    receive: Any, headers: list[tuple[bytes, bytes]], settings: ProxySettings,
) -> RequestBody | None:
    """A streaming body when the request has one (Content-Length > 0 or chunked), read
    within the body timeouts."""
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            timed = timed_receive(receive, settings.body_idle_timeout, settings.body_timeout)
            return RequestBody(timed, settings.max_body_bytes)
    return None


def _failure_status(exc: UpstreamError) -> tuple[int, str, list[tuple[bytes, bytes]]]:
    """Status, problem slug and extra headers for a failed upstream request."""
    if isinstance(exc, UpstreamTimeout):
        return 504, "upstream-timeout", []
    if isinstance(exc, UpstreamUnreachable):  # nothing was sent: a retry is safe
        return 503, "upstream-unavailable", [(b"retry-after", b"1")]
    return 502, "upstream-broken", []
