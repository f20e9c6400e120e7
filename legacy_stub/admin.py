"""Routes outside the contract's fault injection: health, fault control, the OpenAPI file."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from legacy_stub.faults import FaultInjector
from legacy_stub.problems import BACKEND_NAME
from legacy_stub.routes import read_json

OPENAPI_PACKAGE = "checkout_core"
OPENAPI_FILE = "openapi.yaml"


def openapi_text() -> str | None:
    """The contract's OpenAPI file from the checkout_core package, without importing it."""
    spec = find_spec(OPENAPI_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / OPENAPI_FILE
    return path.read_text(encoding="utf-8") if path.is_file() else None


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok", "backend": BACKEND_NAME})


async def openapi(request: Request) -> Response:
    text = openapi_text()
    if text is None:
        raise HTTPException(404, f"{OPENAPI_PACKAGE}/{OPENAPI_FILE} is not installed.")
    return Response(text, media_type="application/yaml")


class FaultEndpoints:
    def __init__(self, injector: FaultInjector) -> None:
        self._injector = injector

    async def show(self, request: Request) -> Response:
        return JSONResponse(self._injector.settings.model_dump())

    async def change(self, request: Request) -> Response:
        settings = self._injector.update(await read_json(request))
        return JSONResponse(settings.model_dump())


def admin_routes(injector: FaultInjector) -> list[Route]:
    faults = FaultEndpoints(injector)
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.yaml", openapi, methods=["GET"]),
        Route("/_faults", faults.show, methods=["GET"]),
        Route("/_faults", faults.change, methods=["PUT"]),
    ]
