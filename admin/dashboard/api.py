"""The dashboard's JSON API, under /_strangler/api/ (see docs/dashboard.md).

    GET  config            what the page may do: {actions, poll_seconds, series_minutes}
    GET  status            what `strangler status --json` prints
    GET  guardrails        the guardrail monitor's latest report
    GET  series?funnel=F   per-minute rates of both arms, last hour
    GET  audit?limit=N     the audit log, newest first
    GET  rollouts          staged rollouts, the ones in progress first
    GET  shadow            the shadow parity summary (`strangler shadow status --json`)
    POST kill              {funnel|null, reason, name?}: trip a kill switch
    POST unkill            {funnel|null, reason, name?}: clear it

The token is checked before any of these run (`admin.access.TokenGate`); kill and unkill
also need one to be configured (403 otherwise: the dashboard is read-only). Store and
telemetry reads block, so they run in worker threads. Errors are raised (`ApiError`,
`StoreUnavailable`) and answered by `admin.errors`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive

from admin.access import API_PREFIX
from admin.dashboard import actions, reads
from admin.dashboard.actions import ApiError, SwitchRequest
from admin.dashboard.series import DEFAULT_MINUTES, SeriesCache
from admin.responses import json_response
from control.rules import RuleSet
from control.status import status_data
from control.store import ControlStore
from proxy import hygiene
from proxy.hygiene import BodyTimeout, timed_receive

log = logging.getLogger("strangler.dashboard")

POLL_SECONDS = 3
MAX_ACTION_BODY = 16_384

Endpoint = Callable[[Request], Awaitable[Response]]
Switch = Callable[[ControlStore, SwitchRequest], dict[str, Any]]


class DashboardApi:
    """The API's endpoints over the parts they read: the control store, a series cache
    over the telemetry, the active rules and this replica's last guardrail report."""

    def __init__(
        self, *, store: ControlStore, series: SeriesCache,
        rules: Callable[[], RuleSet | None], local_report: Callable[[], dict[str, Any]],
        actions_enabled: bool, body_idle_timeout: float,
    ) -> None:
        self.store = store
        self.series_cache = series
        self.rules = rules
        self.local_report = local_report
        self.actions_enabled = actions_enabled
        self.body_idle_timeout = body_idle_timeout

    def routes(self) -> list[Route]:
        reads: dict[str, Endpoint] = {
            "config": self.config, "status": self.status, "guardrails": self.guardrails,
            "series": self.series, "audit": self.audit, "rollouts": self.rollouts,
            "shadow": self.shadow,
        }
        writes: dict[str, Endpoint] = {"kill": self.kill, "unkill": self.unkill}
        return [*(_get_only(API_PREFIX + name, read) for name, read in reads.items()),
                *(Route(API_PREFIX + name, write, methods=["POST"])
                  for name, write in writes.items())]

    # -- reads ---------------------------------------------------------------------------------

    async def config(self, request: Request) -> Response:
        return json_response({"actions": self.actions_enabled, "poll_seconds": POLL_SECONDS,
                              "series_minutes": DEFAULT_MINUTES})

    async def status(self, request: Request) -> Response:
        return json_response(await asyncio.to_thread(status_data, self.store))

    async def guardrails(self, request: Request) -> Response:
        local = self.local_report()
        return json_response(
            await asyncio.to_thread(reads.guardrail_report, self.store, local))

    async def series(self, request: Request) -> Response:
        funnel = _param(request, "funnel") or ""
        if funnel not in self._funnels():
            raise ApiError(404 if funnel else 422, "unknown-funnel",
                           f"no funnel named {funnel!r} in the active rules"
                           if funnel else "the funnel parameter is required")
        minutes = _int_param(request, "minutes", DEFAULT_MINUTES)
        return json_response(await asyncio.to_thread(
            self.series_cache.series, funnel, time.time(), minutes))

    async def audit(self, request: Request) -> Response:
        limit = _int_param(request, "limit", 100)
        return json_response(await asyncio.to_thread(reads.audit_log, self.store, limit))

    async def rollouts(self, request: Request) -> Response:
        return json_response(await asyncio.to_thread(reads.rollouts, self.store))

    async def shadow(self, request: Request) -> Response:
        return json_response(await asyncio.to_thread(reads.shadow, self.store))

    # -- writes --------------------------------------------------------------------------------

    async def kill(self, request: Request) -> Response:
        return await self._switch(request, "kill", actions.trip)

    async def unkill(self, request: Request) -> Response:
        return await self._switch(request, "unkill", actions.clear)

    async def _switch(self, request: Request, name: str, switch: Switch) -> Response:
        if not self.actions_enabled:
            raise ApiError(403, "actions-disabled", "the dashboard is read-only: set "
                           "STRANGLER_ADMIN_TOKEN to trip or clear kill switches from it")
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise ApiError(415, "unsupported-media-type", "send the body as application/json")
        body = await read_body(request.receive, self.body_idle_timeout)
        switch_request = actions.parse_switch_request(body, self._funnels())
        result = await asyncio.to_thread(switch, self.store, switch_request)
        log.warning("dashboard: %s %s by %s: %s", name, switch_request.scope,
                    switch_request.actor, switch_request.reason)
        return json_response(result)

    def _funnels(self) -> frozenset[str]:
        rules = self.rules()
        return frozenset(f.name for f in rules.funnels) if rules is not None else frozenset()


def _get_only(path: str, endpoint: Endpoint) -> Route:
    """A GET route without the HEAD Starlette adds: the API has always answered HEAD with
    405 and `Allow: GET`."""
    route = Route(path, endpoint, methods=["GET"])
    route.methods = {"GET"}
    return route


def _param(request: Request, name: str) -> str | None:
    """The first non-blank value of query parameter `name`."""
    return next((v for v in request.query_params.getlist(name) if v), None)


def _int_param(request: Request, name: str, default: int) -> int:
    raw = _param(request, name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ApiError(422, "invalid-request", f"{name} must be an integer, not {raw!r}"
                       ) from None


async def read_body(receive: Receive, idle: float) -> bytes:
    """The whole request body, at most MAX_ACTION_BODY bytes, each chunk within `idle` s
    (and all of it within 3 * `idle`)."""
    # ASGI messages are dicts (hygiene's type); Starlette types them as mappings
    timed = timed_receive(cast(hygiene.Receive, receive), idle, idle * 3)
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            message = await timed()
        except BodyTimeout:
            raise ApiError(408, "request-timeout", "the body did not arrive in time") from None
        if message["type"] == "http.disconnect":
            raise ApiError(400, "bad-request", "the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_ACTION_BODY:
            raise ApiError(413, "body-too-large",
                           f"bodies are limited to {MAX_ACTION_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
