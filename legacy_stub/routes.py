"""The checkout contract's routes (docs/contract.md) over the stub's service."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from legacy_stub.errors import InvalidInput
from legacy_stub.models import Declined, Placement
from legacy_stub.problems import BadRequest, problem
from legacy_stub.schemas import ItemQuantity, NewCart, NewCheckout, NewItem, NewOrder, parse
from legacy_stub.service import CheckoutDetails, CheckoutService
from legacy_stub.views import cart_view, checkout_view, order_view

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
MAX_BODY_BYTES = 64 * 1024


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"The request body exceeds {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object: `BadRequest` if it is not JSON, 422 if not an object."""
    raw = await read_body(request)
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadRequest("malformed-json", "The request body is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise InvalidInput.field("body", "Input should be an object")
    return data


def idempotency_key(request: Request) -> str:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if not key:
        raise BadRequest("idempotency-key-missing", f"The {IDEMPOTENCY_HEADER} header is required.")
    if len(key) > MAX_KEY_LENGTH or not all(" " <= char <= "~" for char in key):
        raise BadRequest(
            "idempotency-key-invalid",
            f"The {IDEMPOTENCY_HEADER} must be 1..{MAX_KEY_LENGTH} printable ASCII characters.",
        )
    return key


def fingerprint(checkout_id: str, data: dict[str, Any]) -> str:
    """A digest of the request an Idempotency-Key stands for: checkout and canonical body."""
    request = {"checkout_id": checkout_id, "body": data}
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ContractEndpoints:
    def __init__(self, service: CheckoutService) -> None:
        self._service = service

    def routes(self) -> list[Route]:
        return [
            Route("/carts", self.create_cart, methods=["POST"]),
            Route("/carts/{cart_id}", self.get_cart, methods=["GET"]),
            Route("/carts/{cart_id}/items", self.add_item, methods=["POST"]),
            Route("/carts/{cart_id}/items/{sku}", self.set_quantity, methods=["PATCH"]),
            Route("/carts/{cart_id}/items/{sku}", self.remove_item, methods=["DELETE"]),
            Route("/carts/{cart_id}/checkout", self.start_checkout, methods=["POST"]),
            Route("/checkouts/{checkout_id}/orders", self.place_order, methods=["POST"]),
            Route("/orders/{order_id}", self.get_order, methods=["GET"]),
        ]

    async def create_cart(self, request: Request) -> Response:
        body = parse(NewCart, await read_json(request))
        cart = self._service.create_cart(body.country, body.currency)
        return JSONResponse(cart_view(cart), status_code=201)

    async def get_cart(self, request: Request) -> Response:
        return JSONResponse(cart_view(self._service.get_cart(request.path_params["cart_id"])))

    async def add_item(self, request: Request) -> Response:
        body = parse(NewItem, await read_json(request))
        cart = self._service.add_item(request.path_params["cart_id"], body.sku, body.quantity)
        return JSONResponse(cart_view(cart), status_code=201)

    async def set_quantity(self, request: Request) -> Response:
        body = parse(ItemQuantity, await read_json(request))
        params = request.path_params
        cart = self._service.set_quantity(params["cart_id"], params["sku"], body.quantity)
        return JSONResponse(cart_view(cart))

    async def remove_item(self, request: Request) -> Response:
        params = request.path_params
        return JSONResponse(cart_view(self._service.remove_item(params["cart_id"], params["sku"])))

    async def start_checkout(self, request: Request) -> Response:
        body = parse(NewCheckout, await read_json(request))
        details = CheckoutDetails(
            body.email, body.shipping_address.to_address(), body.promotion_code
        )
        checkout = self._service.start_checkout(request.path_params["cart_id"], details)
        return JSONResponse(checkout_view(checkout), status_code=201)

    async def place_order(self, request: Request) -> Response:
        key = idempotency_key(request)
        data = await read_json(request)
        body = parse(NewOrder, data)
        checkout_id = request.path_params["checkout_id"]
        placement = self._service.place_order(
            checkout_id, key, fingerprint(checkout_id, data), body.payment.token
        )
        return _placement_response(placement, request.url.path)

    async def get_order(self, request: Request) -> Response:
        return JSONResponse(order_view(self._service.get_order(request.path_params["order_id"])))


def _placement_response(placement: Placement, instance: str) -> Response:
    headers = {"Idempotent-Replayed": "true"} if placement.replayed else None
    outcome = placement.outcome
    if isinstance(outcome, Declined):
        return problem(
            402, "payment-declined", "Payment declined", outcome.reason, instance, headers=headers
        )
    return JSONResponse(order_view(outcome), status_code=201, headers=headers)
