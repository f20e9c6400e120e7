"""RFC 9457 problem+json responses, and the mapping of errors onto them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import HTTPExceptionHandler

from legacy_stub.errors import (
    CartEmpty,
    CartNotOpen,
    CheckoutCompleted,
    CheckoutError,
    FieldError,
    IdempotencyKeyReuse,
    InvalidInput,
    NotFound,
)

PROBLEM_BASE = "https://checkout.example/problems/"
BACKEND_HEADER = "X-Backend-Name"
BACKEND_NAME = "legacy"


class ProblemResponse(JSONResponse):
    media_type = "application/problem+json"


class BadRequest(Exception):
    """A request the web layer cannot read: malformed JSON, a missing or bad header."""

    def __init__(self, slug: str, detail: str) -> None:
        super().__init__(detail)
        self.slug = slug
        self.detail = detail


_DOMAIN: Mapping[type[CheckoutError], tuple[int, str, str]] = {
    NotFound: (404, "not-found", "Not found"),
    InvalidInput: (422, "validation-error", "The request is not valid"),
    CartNotOpen: (409, "cart-not-open", "The cart is not open"),
    CartEmpty: (409, "cart-empty", "The cart is empty"),
    CheckoutCompleted: (409, "checkout-completed", "The checkout already has an order"),
    IdempotencyKeyReuse: (409, "idempotency-key-reuse", "Idempotency-Key reused"),
}

_HTTP_SLUGS: Mapping[int, tuple[str, str]] = {
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("content-too-large", "Content too large"),
}


def problem_body(
    status: int, slug: str, title: str, detail: str, instance: str,
    *, errors: Sequence[FieldError] = (),
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug, "title": title, "status": status,
        "detail": detail, "instance": instance,
    }
    if errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    return body


def problem(
    status: int, slug: str, title: str, detail: str, instance: str,
    *, errors: Sequence[FieldError] = (), headers: Mapping[str, str] | None = None,
) -> Response:
    body = problem_body(status, slug, title, detail, instance, errors=errors)
    return ProblemResponse(body, status_code=status, headers=headers)


def _status_of(exc: CheckoutError) -> tuple[int, str, str]:
    for cls in type(exc).__mro__:
        if cls in _DOMAIN:
            return _DOMAIN[cls]
    return 409, "conflict", "Conflict"


async def on_checkout_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CheckoutError)
    status, slug, title = _status_of(exc)
    errors = exc.errors if isinstance(exc, InvalidInput) else ()
    return problem(status, slug, title, str(exc), request.url.path, errors=errors)


async def on_bad_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadRequest)
    return problem(400, exc.slug, "Bad request", exc.detail, request.url.path)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    slug, title = _HTTP_SLUGS.get(exc.status_code, (f"http-{exc.status_code}", "HTTP error"))
    return problem(
        exc.status_code, slug, title, exc.detail, request.url.path, headers=exc.headers
    )


async def on_server_error(request: Request, exc: Exception) -> Response:
    """Last resort; it runs outside the middleware, so it names the backend itself."""
    return problem(
        500, "internal-error", "Internal server error", "An unexpected error occurred.",
        request.url.path, headers={BACKEND_HEADER: BACKEND_NAME},
    )


def exception_handlers() -> dict[Any, HTTPExceptionHandler]:
    return {
        CheckoutError: on_checkout_error,
        BadRequest: on_bad_request,
        HTTPException: on_http_exception,
        Exception: on_server_error,
    }
