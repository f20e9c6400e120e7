"""Operations endpoints: liveness, readiness, metrics, and the OpenAPI document."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from checkout_core.bootstrap import Core
from checkout_core.ids import utc_now
from checkout_core.web.problems import problem

log = logging.getLogger(__name__)

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _core(request: Request) -> Core:
    core: Core = request.app.state.core
    return core


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "backend": "core"})


def _task_check(core: Core, enabled: bool, name: str) -> str:
    if not enabled:
        return "disabled"
    return "running" if core.task_running(name) else "stopped"


async def readyz(request: Request) -> JSONResponse:
    core = _core(request)
    checks: dict[str, str] = {}
    try:
        await core.db.ping()
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"error: {exc}"
    checks["relay"] = _task_check(core, core.settings.run_relay, "outbox-relay")
    checks["consumer"] = _task_check(core, core.settings.run_consumer, "order-sync")
    ready = checks["database"] == "ok" and checks["relay"] != "stopped"
    body = {"status": "ready" if ready else "not_ready", "backend": "core", "checks": checks}
    return JSONResponse(body, 200 if ready else 503)


async def _refresh(core: Core) -> None:
    lag = await core.relay.store.run(lambda uow: uow.outbox.lag(utc_now()), write=False)
    core.metrics.outbox_lag.set(lag.unpublished)
    core.metrics.outbox_age.set(lag.oldest_age_seconds)
    group = core.settings.consumer_group
    core.metrics.consumer_lag.labels(group).set(await core.stream.lag(group))
    core.metrics.dlq_size.set(await core.stream.dlq_size())


async def metrics(request: Request) -> Response:
    core = _core(request)
    try:
        await asyncio.wait_for(_refresh(core), 2.0)
    except Exception:
        log.warning("could not refresh lag gauges", exc_info=True)
    return Response(core.metrics.render(), media_type=METRICS_TYPE)


async def openapi(request: Request) -> Response:
    try:
        text = await asyncio.to_thread(OPENAPI_PATH.read_text, "utf-8")
    except FileNotFoundError:
        return problem(request, 404, "not-found", "the OpenAPI document is not available")
    return Response(text, media_type="application/yaml")


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.yaml", openapi, methods=["GET"]),
]
