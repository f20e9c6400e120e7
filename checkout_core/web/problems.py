"""RFC 9457 problem+json responses, and the one place that maps core errors to statuses."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from checkout_core.domain import errors

log = logging.getLogger(__name__)

PROBLEM_BASE = "https://checkout.example/problems/"
PROBLEM_TYPE = "application/problem+json"
BACKEND_HEADER = "X-Backend-Name"
BACKEND_NAME = "core"

STATUS: tuple[tuple[type[errors.CoreError], int], ...] = (
    (errors.NotFound, 404),
    (errors.ValidationFailed, 422),
    (errors.Conflict, 409),
    (errors.PaymentDeclined, 402),
    (errors.PaymentUnavailable, 503),
)
TITLES = {
    400: "Bad request", 402: "Payment declined", 404: "Not found", 405: "Method not allowed",
    409: "Conflict", 413: "Request body too large", 422: "Validation failed",
    500: "Internal error", 503: "Service unavailable",
}
HTTP_SLUGS = {404: "not-found", 405: "method-not-allowed", 413: "request-too-large"}


class BadRequest(Exception):
    """A request the web layer cannot read (malformed JSON, a missing or bad header): 400."""

    status = 400

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class BodyTooLarge(BadRequest):
    status = 413


def problem(
    request: Request,
    status: int,
    code: str,
    detail: str,
    field_errors: Sequence[errors.FieldError] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    if field_errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in field_errors]
    return JSONResponse(body, status, headers={BACKEND_HEADER: BACKEND_NAME, **(headers or {})},
                        media_type=PROBLEM_TYPE)


def status_of(error: errors.CoreError) -> int:
    for cls, status in STATUS:
        if isinstance(error, cls):
            return status
    return 500


async def core_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.CoreError)
    status = status_of(exc)
    field_errors = exc.errors if isinstance(exc, errors.ValidationFailed) else ()
    # retry soon: the core is unavailable, or another request with this key (or for this
    # checkout) is still running; its outcome will be replayed then
    retry = status == 503 or isinstance(
        exc, errors.IdempotencyRequestInProgress | errors.CheckoutPaymentInProgress)
    headers = {"Retry-After": "1"} if retry else None
    return problem(request, status, exc.code, exc.detail, field_errors, headers)


async def bad_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadRequest)
    return problem(request, exc.status, exc.code, str(exc))


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = HTTP_SLUGS.get(exc.status_code, "http-error")
    headers = dict(exc.headers) if exc.headers else None
    return problem(request, exc.status_code, code, str(exc.detail), headers=headers)


async def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(request, 500, "internal-error", "the core failed to handle this request")


EXCEPTION_HANDLERS = {
    errors.CoreError: core_error,
    BadRequest: bad_request,
    HTTPException: http_error,
    Exception: internal_error,
}
