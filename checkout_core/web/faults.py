"""Fault drills over HTTP: `/_faults` on the core's port, and the middleware that applies it.

`GET /_faults` answers the faults in force, `PUT /_faults` replaces them whole (docs:
"Fault drills"). `FaultMiddleware` applies them to the contract routes only: during the
unavailable window they (and `/readyz`) answer 503 with Retry-After; otherwise each request
waits the drawn latency and may then be answered with an injected 500. `/healthz`,
`/metrics`, `/openapi.yaml` and `/_faults` itself are never touched, so a drill can always
be ended. The proxy never forwards `/_faults` (its `forward_path_prefixes`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from checkout_core.faults import FaultSwitch
from checkout_core.web import schemas
from checkout_core.web.problems import problem

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
CONTRACT_PREFIXES = ("/carts", "/checkouts", "/orders")
NOT_READY_PATHS = ("/readyz",)
"""Answer 503 during the unavailable window besides the contract, as a restarting core."""


def is_contract_path(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in CONTRACT_PREFIXES)


def _unavailable(request: Request, seconds_left: float) -> Response:
    retry_after = max(1, math.ceil(seconds_left))
    return problem(request, 503, "injected-unavailable",
                   f"the core is unavailable for a fault drill ({retry_after} s left)",
                   headers={"Retry-After": str(retry_after)})


def _injected_error(request: Request) -> Response:
    return problem(request, 500, "injected-fault",
                   "the core injected this error for a fault drill (error_rate)")


class FaultMiddleware:
    def __init__(self, app: ASGIApp, switch: FaultSwitch, sleep: Sleep = asyncio.sleep) -> None:
        self.app = app
        self.switch = switch
        self.sleep = sleep

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        contract = is_contract_path(path)
        if contract or path in NOT_READY_PATHS:
            left = self.switch.unavailable_for()
            if left > 0:
                await _unavailable(Request(scope), left)(scope, receive, send)
                return
        if contract:
            delay = self.switch.delay_seconds()
            if delay > 0:
                await self.sleep(delay)
            if self.switch.should_fail():
                await _injected_error(Request(scope))(scope, receive, send)
                return
        await self.app(scope, receive, send)


class FaultEndpoints:
    def __init__(self, switch: FaultSwitch) -> None:
        self._switch = switch

    async def show(self, request: Request) -> JSONResponse:
        return JSONResponse(dataclasses.asdict(self._switch.current()))

    async def replace(self, request: Request) -> JSONResponse:
        body, _ = schemas.parse(schemas.FaultsIn, await schemas.read_body(request.stream()))
        faults = self._switch.replace(body.to_faults())
        log.warning("fault drill: faults replaced, now %s", faults)
        return JSONResponse(dataclasses.asdict(faults))


def fault_routes(switch: FaultSwitch) -> list[Route]:
    endpoints = FaultEndpoints(switch)
    return [
        Route("/_faults", endpoints.show, methods=["GET"]),
        Route("/_faults", endpoints.replace, methods=["PUT"]),
    ]
