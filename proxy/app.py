"""The proxy's ASGI application: decide, forward, measure.

A raw ASGI callable on the hot path (no routing framework, no middleware stack): the
decision takes a few microseconds, the rest is streaming bytes between two sockets.

Every failure is one log line with its cause, never a traceback: before the response
started, the client gets problem+json (502, 503, 504, 408, 413); after, the connection is
closed (`proxy.server_protocol.ABORT`), so the client sees a truncated response. Failures
of the client (a slow or abandoned upload) are never counted against a backend.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from admin.access import is_admin_path, is_dashboard_path, on_port
from admin.app import create_admin_app
from control.decision import Backend, Decision, Reason, RequestContext, decide, is_killed
from proxy.access_log import trace_id_from_headers
from proxy.context import extract_context, forward_path, normalize_path
from proxy.forward import (
    BodyTooLarge,
    ClientGone,
    RequestBody,
    UpstreamBroken,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
    read_body,
    upstream_error,
)
from proxy.h1client import Response
from proxy.headers import downstream_response_headers, upstream_request_headers
from proxy.hygiene import BodyTimeout, framing_problem, timed_receive
from proxy.outcome import RequestOutcome
from proxy.override import apply_override, forced_backend
from proxy.problems import send_problem
from proxy.runtime import ProxyRuntime
from proxy.server_protocol import ABORT, HttpLimits
from proxy.trace_context import CURRENT_TRACE_ID
from shadow.mirror import KEPT_HEADERS, MirrorJob
from shadow.selection import MIRRORED_REASONS, route_request, selection

log = logging.getLogger("strangler.proxy")

CLOSE = [(b"connection", b"close")]


class ForwardFailed(Exception):
    """The upstream failed; `decision` is the one in force when it did (maybe FAILOVER)."""

    def __init__(self, error: UpstreamError, decision: Decision) -> None:
        super().__init__(str(error))
        self.error = error
        self.decision = decision

NO_BODY_STATUS = frozenset({204, 304})
CLIENT_GONE = 499  # nginx's "client closed request": recorded, never sent
SMALL_RESPONSE = 65536  # a response body of known length up to this is read before it starts


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
        self.trust_all_countries = settings.trust_country_headers == "always"
        self._stale = False
        self.draining = False  # the server began to shut down: /readyz answers 503
        # the access log's trace id from the client's traceparent (unless tracing set one)
        self.trace_from_header = settings.access_log > 0
        self.admin_app = create_admin_app(
            store=runtime.store, metrics_text=runtime.metrics.render, health=self.health,
            unready=self.unready_reason, rules=lambda: runtime.snapshot.rules,
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
                self.begin_draining()
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

    def begin_draining(self) -> None:
        """The server stops accepting and drains (SIGTERM): no longer ready. Called by the
        server's protocol (`proxy.server_protocol`) as the shutdown begins."""
        self.draining = True

    def unready_reason(self) -> str | None:
        """Why /readyz answers 503 (None: ready): draining, or no routing state yet; never
        the control store's health (`ProxyRuntime.unready_reason`)."""
        if self.draining:
            return "draining: the server is shutting down"
        return self.rt.unready_reason()

    # -- the hot path ------------------------------------------------------------------------

    async def route(
        self, headers: list[tuple[bytes, bytes]], path: str, country_trusted: bool = True,
    ) -> tuple[RequestContext, Decision]:
        snapshot = self.rt.snapshot
        rules = snapshot.rules
        ctx = extract_context(rules, path, headers, country_trusted)
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

    def country_trusted(self, peer: str | None) -> bool:
        """Whether the peer's country headers are believed: always
        (`STRANGLER_TRUST_COUNTRY_HEADERS=always`, behind a CDN that sets them) or only from
        `STRANGLER_TRUSTED_PROXIES` (the default). Anyone else could pick their rule."""
        return self.trust_all_countries or self.rt.trusted.trusts(peer)

    def recorded_country(self, country: str | None) -> str:
        """The country an outcome carries: one the active rules name, else "other" ("-"
        for none), so that what clients send cannot grow the telemetry's keys."""
        if country is None:
            return "-"
        rules = self.rt.snapshot.rules
        return country if rules is not None and country in rules.named_countries else "other"

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
        if self.trace_from_header and CURRENT_TRACE_ID.get() is None:
            CURRENT_TRACE_ID.set(trace_id_from_headers(headers))
        problem = framing_problem(scope.get("http_version", "1.1"), headers)
        if problem is not None:
            log.warning("rejected %s %s: %s", scope["method"], scope["path"], problem)
            await send_problem(send, 400, "bad-request", problem, scope["path"], CLOSE)
            return
        client = scope.get("client")
        try:
            ctx, decision = await self.route(
                headers, scope["path"], self.country_trusted(client[0] if client else None))
        except Exception:  # the decision never takes a request down: legacy serves it
            log.exception("routing failed, sending to legacy")
            ctx = extract_context(None, scope["path"], headers)
            decision = Decision(Backend.LEGACY, Reason.ERROR, "none")
        if not self._forwardable(ctx.path):
            await self._reply_problem(send, ctx, decision, 404, "not-found",
                                      "no checkout route here", started, scope)
            return
        limit = self.rt.settings.max_body_bytes
        has_body, length = _body_framing(headers)
        if length is not None and length > limit:
            await self._reply_problem(send, ctx, decision, 413, "body-too-large",
                                      f"request bodies are limited to {limit} bytes", started,
                                      scope)
            return
        grant = self._read_ahead(has_body, length)
        try:
            await self._forward(scope, receive, send, ctx, decision, started, has_body, length,
                                grant)
        finally:
            if grant:
                self.rt.read_ahead.give_back(grant)

    def _read_ahead(self, has_body: bool, length: int | None) -> int:
        """The bytes this request's body may be read ahead in: what it needs up to
        `body_buffer_bytes` when the process-wide budget has them, else 0 (it streams)."""
        if not has_body:
            return 0
        buffer = self.rt.settings.body_buffer_bytes
        want = buffer if length is None else length if length <= buffer else 0
        return want if want and self.rt.read_ahead.take(want) else 0

    async def _forward(
        self, scope: dict[str, Any], receive: Any, send: Any, ctx: RequestContext,
        decision: Decision, started: float, has_body: bool, length: int | None,
        read_ahead: int,
    ) -> None:
        method: str = scope["method"]
        headers = scope["headers"]
        extra = [(b"x-checkout-session", ctx.unit.encode())] if ctx.unit_minted else []
        client = scope.get("client")
        peer = client[0] if client else None
        upstream_headers = upstream_request_headers(
            headers, peer=peer, scheme=scope.get("scheme", "http"), via=self.via,
            trust=self.rt.trusted.trusts(peer), extra=extra,
        )
        qs = scope.get("query_string", b"")
        path_qs = forward_path(scope.get("raw_path"), scope["path"], ctx.path) + (
            "?" + qs.decode("latin-1") if qs else "")
        try:
            body = await self._request_body(receive, length, read_ahead) if has_body else None
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
        except ClientGone:  # nobody to answer; 499 in the outcome, as nginx logs it
            log.info("%s %s: the client left while sending its body", method, ctx.path)
            await self._finish(scope, ctx, decision, CLIENT_GONE, started, None)
            return
        except ForwardFailed as failed:
            await self._reply_failure(send, ctx, failed.decision, failed.error, started, scope)
            return
        answer = await self._stream_response(scope, send, ctx, decision, response, started)
        if answer is not None and decision.backend is Backend.LEGACY and (
            ctx.funnel is not None and (rules := self.rt.snapshot.rules) is not None
            and ctx.funnel.name in rules.shadowed_funnels
        ):
            try:  # the customer has the answer: the shadow can only lose its own figures
                self._mirror(scope, ctx, decision, body, response, answer)
            except Exception:
                log.exception("shadow: %s %s was not mirrored", scope["method"], ctx.path)

    def _mirror(self, scope: dict[str, Any], ctx: RequestContext, decision: Decision,
                body: RequestBody | None, response: Response, answer: bytes) -> None:
        """Hand a request legacy served to the shadow mirror, after its answer went out
        (docs/shadow.md): only when the funnel's shadow selects it, and only what was held
        whole (the request body read ahead, the response read before it was relayed)."""
        # every request of a shadowed funnel passes here: few calls, nothing copied until
        # the job is known to be queued (`mirrorable_decision`, inlined: legacy served it)
        if decision.reason not in MIRRORED_REASONS or ctx.funnel is None:
            return
        method: str = scope["method"]
        selected = route_request(ctx.funnel, ctx.country, ctx.unit, method, ctx.path)
        if selected is None:
            return
        mirror = self.rt.mirror
        if not mirror.admit(ctx.funnel.name):  # a full queue: counted, nothing copied
            return
        if body is not None and body.more:  # streamed on to legacy: not held, not mirrored
            mirror.drop(ctx.funnel.name, "too_large")
            return
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in scope["headers"]
                   if n in KEPT_HEADERS]  # the few the replay sends, never cookies
        encoding = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in response.raw_headers
                    if n.lower() == b"content-encoding"]
        mirror.submit(MirrorJob(
            ctx.funnel.name, ctx.unit, selection(*selected, ctx.path), method, headers,
            body.first if body is not None else b"", response.status, answer, encoding))

    async def _request_body(self, receive: Any, length: int | None,
                            read_ahead: int) -> RequestBody:
        """The client's body within the body timeouts: read whole first when it fits in
        `read_ahead` bytes (`_read_ahead`: no upstream connection is held meanwhile), else
        streamed."""
        s = self.rt.settings
        timed = timed_receive(receive, s.body_idle_timeout, s.body_timeout)
        return await read_body(timed, s.max_body_bytes, read_ahead, length)

    async def _reply_failure(
        self, send: Any, ctx: RequestContext, decision: Decision, exc: UpstreamError,
        started: float, scope: dict[str, Any],
    ) -> None:
        """The upstream failed before the response started: one log line, problem+json."""
        status, slug, extra = _failure_status(exc)
        log.warning("%s %s -> %s failed: %s", scope["method"], ctx.path,
                    decision.backend.value, exc)
        await self._reply_problem(send, ctx, decision, status, slug, str(exc), started, scope,
                                  upstream_error=exc.kind, extra=extra)

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
        """The core could not be reached and legacy then serves the request: the core's
        upstream errors metric counts it, and the guardrails see a failover (not an error a
        customer saw: it burns no error budget unless the core stays unreachable past the
        grace period, see guardrails.telemetry)."""
        self.rt.observe(RequestOutcome(
            funnel=ctx.funnel.name if ctx.funnel is not None else "-",
            country=self.recorded_country(ctx.country), unit=ctx.unit, backend=Backend.CORE,
            reason=Reason.FAILOVER, method=method, path=ctx.path, status=503, duration=0.0,
            upstream_error=exc.kind, signals=(),
        ))

    async def _stream_response(
        self, scope: dict[str, Any], send: Any, ctx: RequestContext, decision: Decision,
        response: Response, started: float,
    ) -> bytes | None:
        """Relay the response; its body when it was read whole before it was relayed (and
        relayed without error), for the shadow mirror."""
        status: int = response.status
        name = decision.backend.value
        try:  # a small body is read before the answer starts: a failure is still a 502
            if not 200 <= status <= 599:
                raise UpstreamBroken(f"{name}: answered with status {status}")
            body = await response.read() if _read_first(scope, response) else None
        except (OSError, UpstreamBroken) as exc:  # nothing was sent to the client yet
            response.release()
            failure = exc if isinstance(exc, UpstreamError) else upstream_error(name, exc)
            await self._reply_failure(send, ctx, decision, failure, started, scope)
            return None
        out = downstream_response_headers(response.raw_headers, self.via)
        if status in NO_BODY_STATUS:  # a Content-Length there counts no byte of this message
            out = [(name, value) for name, value in out if name != b"content-length"]
        elif response.transfer_encoding is not None:  # codings the client still has to undo
            out.append((b"transfer-encoding", response.transfer_encoding))
        out.extend(self._decision_headers(ctx, decision))
        error: str | None = None
        try:
            await send({"type": "http.response.start", "status": status, "headers": out})
            if body is not None:
                await send({"type": "http.response.body", "body": body})
            else:
                error = await self._stream_body(scope, send, ctx, decision, response)
        except RuntimeError as exc:  # uvicorn refused what we relayed (its framing checks)
            error = "reset"
            log.error("%s %s -> %s: the response could not be relayed: %r", scope["method"],
                      ctx.path, decision.backend.value, exc)
            _abort(scope)
        finally:
            response.release()
            await self._finish(scope, ctx, decision, status, started, error)
        return body if error is None else None

    async def _stream_body(
        self, scope: dict[str, Any], send: Any, ctx: RequestContext, decision: Decision,
        response: Response,
    ) -> str | None:
        """Relay the body chunk by chunk. When the upstream breaks off, the response is
        aborted and the error kind returned (the upstream's failure, in its metrics)."""
        try:
            async for chunk in response.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except OSError as exc:  # the upstream's: uvicorn drops sends to a gone client silently
            failure = upstream_error(decision.backend.value, exc)
            log.warning("%s %s -> %s broke off the response: %s", scope["method"], ctx.path,
                        decision.backend.value, failure)
            _abort(scope)
            return failure.kind
        await send({"type": "http.response.body", "body": b""})
        return None

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
        attempt = None
        if funnel is not None:
            signals = tuple(s.name for s in funnel.signals if s.matches(method, ctx.path, status))
            await self.rt.track_unit(funnel, ctx.unit, decision, status, signals)
            if signals:  # a retry or replay with the same key is the same payment attempt
                attempt = _attempt(ctx.path, scope["headers"])
        self.rt.observe(RequestOutcome(
            funnel=funnel.name if funnel is not None else "-",
            country=self.recorded_country(ctx.country),
            unit=ctx.unit,
            backend=decision.backend,
            reason=decision.reason,
            method=method,
            path=ctx.path,
            status=status,
            duration=time.perf_counter() - started,
            upstream_error=upstream_error,
            signals=signals,
            attempt=attempt,
            rule=decision.rule_id,
            rules_version=decision.rules_version,
        ))


def _body_framing(headers: list[tuple[bytes, bytes]]) -> tuple[bool, int | None]:
    """Whether the request has a body (Content-Length > 0, or chunked), and its declared
    length (framing_problem has refused the ambiguous cases)."""
    for name, value in headers:
        if name == b"transfer-encoding":
            return True, None
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return True, None
            return length > 0, length
    return False, None


def _attempt(path: str, headers: list[tuple[bytes, bytes]]) -> str | None:
    """The payment attempt a request makes: its path (which names the checkout) and its
    Idempotency-Key; None without a key (then each request counts on its own)."""
    for name, value in headers:
        if name == b"idempotency-key":
            return f"{path}#{value.decode('latin-1')}"
    return None


def _read_first(scope: dict[str, Any], response: Response) -> bool:
    """Whether the response body is read whole before the answer starts: none (HEAD, 204,
    304), or small and of known length; else it streams."""
    length = response.content_length
    return scope["method"] == "HEAD" or response.status in NO_BODY_STATUS or (
        length is not None and length <= SMALL_RESPONSE)


def _abort(scope: dict[str, Any]) -> None:
    """Close the client's connection mid-response (the server's ABORT extension)."""
    abort = scope.get("extensions", {}).get(ABORT)
    if abort is not None:
        abort()


def _failure_status(exc: UpstreamError) -> tuple[int, str, list[tuple[bytes, bytes]]]:
    """Status, problem slug and extra headers for a failed upstream request."""
    if isinstance(exc, UpstreamTimeout):
        return 504, "upstream-timeout", []
    if isinstance(exc, UpstreamUnreachable):  # nothing was sent: a retry is safe
        return 503, "upstream-unavailable", [(b"retry-after", b"1")]
    return 502, "upstream-broken", []
