"""The admin surface as one Starlette app: /metrics, /_strangler/healthz, /_strangler/state,
the dashboard's page (/dashboard) and its JSON API (/_strangler/api/...).

Routing, 404/405, JSON and problem answers and the token live here and nowhere else:
`TokenGate` checks the token for every path but the page's, `admin.errors` maps errors to
problem+json. The proxy decides which requests are admin requests (`ProxyApp.__call__`) and
hands them over with normalised paths; lifespan events stay with the proxy.

    GET /metrics               Prometheus text
    GET /_strangler/healthz    `health()`: 200 when its status is "ok", else 503
    GET /_strangler/state      `health()`, always 200
    GET /livez                 200 while the process's event loop answers; no token
    GET /readyz                200 when `unready()` is None, else 503 problem+json; no token
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin.access import ADMIN_PREFIX, METRICS_PATH, PROBE_PATHS, TokenGate
from admin.dashboard.api import DashboardApi
from admin.dashboard.page import page_routes
from admin.dashboard.series import SeriesCache, WindowSource
from admin.errors import EXCEPTION_HANDLERS
from admin.responses import json_response, problem_response
from control.rules import RuleSet
from control.store import ControlStore

METRICS_TYPE = "text/plain; version=0.0.4"


def ops_routes(metrics_text: Callable[[], bytes], health: Callable[[], dict[str, Any]],
               unready: Callable[[], str | None]) -> list[Route]:
    async def metrics(request: Request) -> Response:
        return Response(metrics_text(), headers={"content-type": METRICS_TYPE})

    async def healthz(request: Request) -> Response:
        state = health()
        return json_response(state, 200 if state["status"] == "ok" else 503)

    async def state(request: Request) -> Response:
        return json_response(health())

    async def livez(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(request: Request) -> Response:
        reason = unready()
        if reason is None:
            return json_response({"status": "ready"})
        return problem_response(503, "not-ready", reason, request.url.path,
                                {"retry-after": "1", "cache-control": "no-store"})

    livez_path, readyz_path = PROBE_PATHS
    return [
        Route(METRICS_PATH, metrics, methods=["GET"]),
        Route(ADMIN_PREFIX + "healthz", healthz, methods=["GET"]),
        Route(ADMIN_PREFIX + "state", state, methods=["GET"]),
        Route(livez_path, livez, methods=["GET"]),
        Route(readyz_path, readyz, methods=["GET"]),
    ]


def create_admin_app(
    *, store: ControlStore, metrics_text: Callable[[], bytes],
    health: Callable[[], dict[str, Any]], unready: Callable[[], str | None],
    rules: Callable[[], RuleSet | None],
    local_report: Callable[[], dict[str, Any]], telemetry: WindowSource, token: str | None,
    body_idle_timeout: float,
) -> Starlette:
    """The admin app over the parts it reads.

    `metrics_text` renders /metrics; `health` is the state /healthz and /state answer (its
    `status` "ok" or not); `unready` why /readyz answers 503 (None: ready); `rules` gives the active rules (the funnels the API knows);
    `local_report` this replica's latest guardrail report; `telemetry` the windows the
    charts are drawn from; `token` the admin token (None or empty: no token, reads open to
    anyone who reaches the surface, kill and unkill disabled); `body_idle_timeout` how long
    a kill/unkill body may stall.
    """
    secret = token.encode() if token else None
    api = DashboardApi(
        store=store, series=SeriesCache(telemetry), rules=rules, local_report=local_report,
        actions_enabled=secret is not None, body_idle_timeout=body_idle_timeout,
    )
    app = Starlette(
        routes=[*ops_routes(metrics_text, health, unready), *page_routes(), *api.routes()],
        middleware=[Middleware(TokenGate, token=secret)],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.router.redirect_slashes = False  # /metrics/ is no admin path: 404, not a redirect
    return app
