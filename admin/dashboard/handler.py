"""The operator dashboard on the admin surface: the page at /dashboard and its JSON API.

Where it is served: on the admin port when one is set (`STRANGLER_ADMIN_PORT`), else on the
proxy port, like the other admin paths. The page and its script and style hold no data, so
they are served to anyone who can reach the admin surface (a browser cannot send a Bearer
token when it navigates); every API call needs `Authorization: Bearer TOKEN` when
`STRANGLER_ADMIN_TOKEN` is set. Kill and unkill need the token always: with no token
configured the dashboard is read-only (403).

    GET  /dashboard                        the page (dashboard.js, dashboard.css beside it)
    GET  /_strangler/api/config            what the page may do: {actions, poll_seconds}
    GET  /_strangler/api/status            what `strangler status --json` prints
    GET  /_strangler/api/guardrails        the guardrail monitor's latest report
    GET  /_strangler/api/series?funnel=F   per-minute rates of both arms, last hour
    GET  /_strangler/api/audit?limit=N     the audit log, newest first
    GET  /_strangler/api/rollouts          staged rollouts, the ones in progress first
    POST /_strangler/api/kill              {funnel|null, reason, name?}: trip a kill switch
    POST /_strangler/api/unkill            {funnel|null, reason, name?}: clear it
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from admin.access import bearer_ok, on_port
from admin.dashboard import actions, reads
from admin.dashboard.series import DEFAULT_MINUTES, SeriesCache
from control.status import status_data
from control.store import StoreUnavailable
from proxy.context import normalize_path
from proxy.hygiene import BodyTimeout, timed_receive
from proxy.problems import send_problem
from proxy.runtime import ProxyRuntime

log = logging.getLogger("strangler.dashboard")

PAGE_PATH = "/dashboard"
API_PREFIX = "/_strangler/api/"
POLL_SECONDS = 3
MAX_ACTION_BODY = 16_384
ASSETS = {
    "dashboard.html": b"text/html; charset=utf-8",
    "dashboard.js": b"text/javascript; charset=utf-8",
    "dashboard.css": b"text/css; charset=utf-8",
}
PAGE_HEADERS = [
    (b"content-security-policy", (
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        b"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]
JSON_HEADERS = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]
CHALLENGE = [(b"www-authenticate", b'Bearer realm="strangler"')]

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


def _normalized(path: str) -> str:
    return normalize_path(path) if "//" in path or "/." in path else path


def is_dashboard_path(path: str) -> bool:
    """The page, its assets (/dashboard/...) and the API (/_strangler/api/...)."""
    path = _normalized(path)
    return path == PAGE_PATH or path.startswith((PAGE_PATH + "/", API_PREFIX))


def load_assets() -> dict[str, bytes]:
    package = resources.files("admin.dashboard")
    return {name: (package / name).read_bytes() for name in ASSETS}


def _finite(value: Any) -> Any:
    """`value` with every infinite or NaN float replaced by None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def json_bytes(data: Any) -> bytes:
    try:
        return json.dumps(data, default=str, allow_nan=False).encode()
    except ValueError:  # an infinite bound in a guardrail report, say
        return json.dumps(_finite(data), default=str, allow_nan=False).encode()


async def send_json(send: Send, status: int, data: Any) -> None:
    body = json_bytes(data)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *JSON_HEADERS,
    ]})
    await send({"type": "http.response.body", "body": body})


class Dashboard:
    """ASGI handler of the dashboard's paths (see `owns`)."""

    def __init__(self, runtime: ProxyRuntime) -> None:
        self.rt = runtime
        settings = runtime.settings
        self.admin_port = settings.admin_port
        self.token = settings.admin_token.encode() if settings.admin_token else None
        self.series = SeriesCache(runtime.telemetry)
        self.assets = load_assets()
        self._reads: dict[str, Callable[[dict[str, list[str]]], Awaitable[Any]]] = {
            "config": self._config, "status": self._status, "guardrails": self._guardrails,
            "series": self._series, "audit": self._audit, "rollouts": self._rollouts,
        }
        self._writes = {"kill": actions.trip, "unkill": actions.clear}

    def owns(self, scope: dict[str, Any]) -> bool:
        """A dashboard path on the admin surface: the admin port when there is one."""
        on_admin_surface = self.admin_port is None or on_port(scope, self.admin_port)
        return on_admin_surface and is_dashboard_path(scope["path"])

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        path = _normalized(scope["path"])
        if path.startswith(API_PREFIX):
            await self.api(scope, path[len(API_PREFIX):], receive, send)
        else:
            await self.page(scope, path, send)

    # -- the page ------------------------------------------------------------------------------

    async def page(self, scope: dict[str, Any], path: str, send: Send) -> None:
        if path == PAGE_PATH + "/":  # relative URLs resolve against /dashboard
            await send({"type": "http.response.start", "status": 308, "headers": [
                (b"location", b"../dashboard"), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        name = "dashboard.html" if path == PAGE_PATH else path[len(PAGE_PATH) + 1:]
        if name not in ASSETS:
            await send_problem(send, 404, "not-found", "no such dashboard file", path)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await send_problem(send, 405, "method-not-allowed", "use GET", path,
                               [(b"allow", b"GET, HEAD")])
            return
        body = self.assets[name]
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", ASSETS[name]), (b"content-length", str(len(body)).encode()),
            *PAGE_HEADERS,
        ]})
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else body})

    # -- the API -------------------------------------------------------------------------------

    async def api(self, scope: dict[str, Any], name: str, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        read, write = self._reads.get(name), self._writes.get(name)
        if read is None and write is None:
            await send_problem(send, 404, "not-found", "no such dashboard endpoint", path)
        elif method != ("GET" if read is not None else "POST"):
            allow = b"GET" if read is not None else b"POST"
            await send_problem(send, 405, "method-not-allowed", f"use {allow.decode()}", path,
                               [(b"allow", allow)])
        elif write is not None and self.token is None:
            await send_problem(send, 403, "actions-disabled", "the dashboard is read-only: "
                               "set STRANGLER_ADMIN_TOKEN to trip or clear kill switches "
                               "from it", path)
        elif not bearer_ok(scope["headers"], self.token):
            await send_problem(send, 401, "unauthorized", "dashboard endpoints need "
                               "'Authorization: Bearer TOKEN' (STRANGLER_ADMIN_TOKEN)", path,
                               CHALLENGE)
        else:
            await self._answer(scope, name, read, receive, send)

    async def _answer(
        self, scope: dict[str, Any], name: str,
        read: Callable[[dict[str, list[str]]], Awaitable[Any]] | None, receive: Receive,
        send: Send,
    ) -> None:
        path = scope["path"]
        try:
            if read is not None:
                query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
                await send_json(send, 200, await read(query))
            else:
                await send_json(send, 200, await self._act(name, scope, receive))
        except actions.ApiError as exc:
            await send_problem(send, exc.status, exc.slug, exc.detail, path)
        except StoreUnavailable as exc:
            await send_problem(send, 503, "store-unavailable", str(exc), path,
                               [(b"retry-after", b"1")])
        except Exception:
            log.exception("dashboard endpoint %s failed", path)
            await send_problem(send, 500, "internal-error", "see the proxy's log", path)

    async def _config(self, query: dict[str, list[str]]) -> dict[str, Any]:
        return {"actions": self.token is not None, "poll_seconds": POLL_SECONDS,
                "series_minutes": DEFAULT_MINUTES}

    async def _status(self, query: dict[str, list[str]]) -> dict[str, Any]:
        return await asyncio.to_thread(status_data, self.rt.store)

    async def _guardrails(self, query: dict[str, list[str]]) -> dict[str, Any]:
        local = self.rt.monitor.last_report
        return await asyncio.to_thread(reads.guardrail_report, self.rt.store, local)

    async def _series(self, query: dict[str, list[str]]) -> dict[str, Any]:
        funnel = query.get("funnel", [""])[0]
        if funnel not in self._funnels():
            raise actions.ApiError(404 if funnel else 422, "unknown-funnel",
                                      f"no funnel named {funnel!r} in the active rules"
                                      if funnel else "the funnel parameter is required")
        minutes = _int_param(query, "minutes", DEFAULT_MINUTES)
        return await asyncio.to_thread(self.series.series, funnel, time.time(), minutes)

    async def _audit(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        limit = _int_param(query, "limit", 100)
        return await asyncio.to_thread(reads.audit_log, self.rt.store, limit)

    async def _rollouts(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        return await asyncio.to_thread(reads.rollouts, self.rt.store)

    async def _act(self, name: str, scope: dict[str, Any], receive: Receive) -> dict[str, Any]:
        if not _is_json(scope["headers"]):
            raise actions.ApiError(415, "unsupported-media-type",
                                      "send the body as application/json")
        body = await _read_body(receive, self.rt.settings.body_idle_timeout)
        request = actions.parse_switch_request(body, self._funnels())
        result = await asyncio.to_thread(self._writes[name], self.rt.store, request)
        log.warning("dashboard: %s %s by %s: %s", name, request.scope, request.actor,
                    request.reason)
        return result

    def _funnels(self) -> frozenset[str]:
        rules = self.rt.snapshot.rules
        return frozenset(f.name for f in rules.funnels) if rules is not None else frozenset()


def _int_param(query: dict[str, list[str]], name: str, default: int) -> int:
    raw = query.get(name, [str(default)])[0]
    try:
        return int(raw)
    except ValueError:
        raise actions.ApiError(422, "invalid-request",
                                  f"{name} must be an integer, not {raw!r}") from None


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";")[0].strip().lower() == b"application/json"
    return False


async def _read_body(receive: Receive, idle: float) -> bytes:
    """The whole request body, at most MAX_ACTION_BODY bytes, each chunk within `idle` s."""
    timed = timed_receive(receive, idle, idle * 3)
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            message = await timed()
        except BodyTimeout:
            raise actions.ApiError(408, "request-timeout", "the body did not arrive in time"
                                      ) from None
        if message["type"] == "http.disconnect":
            raise actions.ApiError(400, "bad-request", "the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_ACTION_BODY:
            raise actions.ApiError(413, "body-too-large",
                                      f"bodies are limited to {MAX_ACTION_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
