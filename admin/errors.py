"""How the admin app answers errors: every one as problem+json, mapped here only.

- `HTTPException` from the router: 404 (no such path), 405 (wrong method, with `Allow`);
- `ApiError`: the status, slug and detail it carries;
- `ControlError` (an operation the control plane refused, such as a kill of a funnel the
  store's rules no longer have): 409 `conflict`, with its message;
- `StoreUnavailable`: 503 `store-unavailable`, `Retry-After: 1`;
- anything else: 500 "see the proxy's log". As Starlette does with every unhandled error,
  the app then re-raises it for its server to log (`ProxyApp.admin` logs it, once, with its
  traceback).
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ExceptionHandler

from admin.access import API_PREFIX, is_page_path
from admin.dashboard.actions import ApiError
from admin.responses import problem_response
from control.errors import ControlError
from control.store import StoreUnavailable


def _not_found_detail(path: str) -> str:
    if path.startswith(API_PREFIX):
        return "no such dashboard endpoint"
    return "no such dashboard file" if is_page_path(path) else "no such admin endpoint"


def _method_not_allowed(path: str, allow: str) -> Response:
    methods = sorted(m.strip() for m in allow.split(",") if m.strip())
    detail = "use " + " or ".join(m for m in methods if m != "HEAD")
    return problem_response(405, "method-not-allowed", detail, path,
                            {"allow": ", ".join(methods)})


async def http_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    path = request.scope["path"]
    if exc.status_code == 404:
        return problem_response(404, "not-found", _not_found_detail(path), path)
    if exc.status_code == 405:
        return _method_not_allowed(path, (exc.headers or {}).get("Allow", ""))
    slug = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "-")
    return problem_response(exc.status_code, slug, exc.detail, path, exc.headers)


async def api_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return problem_response(exc.status, exc.slug, exc.detail, request.scope["path"])


async def refused_problem(request: Request, exc: Exception) -> Response:
    return problem_response(409, "conflict", str(exc), request.scope["path"])


async def store_problem(request: Request, exc: Exception) -> Response:
    return problem_response(503, "store-unavailable", str(exc), request.scope["path"],
                            {"retry-after": "1"})


async def internal_problem(request: Request, exc: Exception) -> Response:
    return problem_response(500, "internal-error", "see the proxy's log", request.scope["path"])


EXCEPTION_HANDLERS: Mapping[Any, ExceptionHandler] = {
    HTTPException: http_problem,
    ApiError: api_problem,
    ControlError: refused_problem,
    StoreUnavailable: store_problem,
    Exception: internal_problem,
}
