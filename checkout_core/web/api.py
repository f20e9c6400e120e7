"""The checkout HTTP contract (docs/contract.md): thin handlers over the services.

A request with `X-Checkout-Shadow: 1` is shadow traffic (`domain.shadow`): the services keep
it apart from real traffic, and a response about a shadow resource carries the header too
(its body is the same as a real one's)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from checkout_core.bootstrap import Core
from checkout_core.domain import shadow as shadow_traffic
from checkout_core.domain.checkout import Address
from checkout_core.service.idempotency import fingerprint, valid_key
from checkout_core.service.ordering import PlaceOrder
from checkout_core.web import schemas
from checkout_core.web.problems import BadRequest
from checkout_core.web.representations import cart_json, checkout_json, order_json

IDEMPOTENCY_HEADER = "Idempotency-Key"
SHADOW_HEADER = shadow_traffic.HEADER
SHADOW_VALUE = "1"


def _core(request: Request) -> Core:
    core: Core = request.app.state.core
    return core


def _json(body: object, status: int = 200, shadow: bool = False) -> JSONResponse:
    return JSONResponse(body, status, headers={SHADOW_HEADER: SHADOW_VALUE} if shadow else None)


def _shadow(request: Request) -> bool:
    """Whether the request is shadow traffic: `X-Checkout-Shadow: 1` (counted); absent, it is
    real; any other value is refused (400), never guessed."""
    value = request.headers.get(SHADOW_HEADER)
    if value is None:
        return False
    if value.strip() != SHADOW_VALUE:
        raise BadRequest("shadow-header-invalid",
                         f"{SHADOW_HEADER} must be {SHADOW_VALUE!r} when present")
    route: Any = request.scope.get("route")
    _core(request).metrics.shadow_request(getattr(route, "path", request.url.path))
    return True


async def create_cart(request: Request) -> JSONResponse:
    shadow = _shadow(request)
    body, _ = schemas.parse(schemas.CreateCart, await schemas.read_body(request.stream()))
    priced = await _core(request).carts.create_cart(body.country, body.currency, shadow=shadow)
    return _json(cart_json(priced), 201, shadow)


async def get_cart(request: Request) -> JSONResponse:
    shadow = _shadow(request)
    priced = await _core(request).carts.get_cart(request.path_params["cart_id"], shadow=shadow)
    return _json(cart_json(priced), shadow=shadow)


async def add_item(request: Request) -> JSONResponse:
    shadow = _shadow(request)
    body, _ = schemas.parse(schemas.AddItem, await schemas.read_body(request.stream()))
    cart_id = request.path_params["cart_id"]
    priced = await _core(request).carts.add_item(cart_id, body.sku, body.quantity,
                                                 shadow=shadow)
    return _json(cart_json(priced), 201, shadow)


async def change_item(request: Request) -> JSONResponse:
    shadow = _shadow(request)
    body, _ = schemas.parse(schemas.ChangeQuantity, await schemas.read_body(request.stream()))
    params = request.path_params
    priced = await _core(request).carts.change_quantity(
        params["cart_id"], params["sku"], body.quantity, shadow=shadow
    )
    return _json(cart_json(priced), shadow=shadow)


async def remove_item(request: Request) -> JSONResponse:
    shadow = _shadow(request)
    params = request.path_params
    priced = await _core(request).carts.remove_item(params["cart_id"], params["sku"],
                                                    shadow=shadow)
    return _json(cart_json(priced), shadow=shadow)


async def start_checkout(request: Request) -> JSONResponse:
    shadow = _shadow(request)
    body, _ = schemas.parse(schemas.StartCheckout, await schemas.read_body(request.stream()))
    a = body.shipping_address
    address = Address(a.name, a.line1, a.city, a.postal_code, a.country.upper(), a.line2)
    checkout = await _core(request).carts.start_checkout(
        request.path_params["cart_id"], body.email, address, body.promotion_code, shadow=shadow
    )
    return _json(checkout_json(checkout), 201, shadow)


def _idempotency_key(request: Request) -> str:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None or key == "":
        raise BadRequest("idempotency-key-missing", f"the {IDEMPOTENCY_HEADER} header is required")
    if not valid_key(key):
        raise BadRequest("idempotency-key-invalid",
                         f"{IDEMPOTENCY_HEADER} must be 1 to 255 printable ASCII characters")
    return key


async def place_order(request: Request) -> JSONResponse:
    shadow = _shadow(request)
    key = _idempotency_key(request)
    body, raw = schemas.parse(schemas.PlaceOrderIn, await schemas.read_body(request.stream()))
    checkout_id = request.path_params["checkout_id"]
    command = PlaceOrder(checkout_id, key, fingerprint(checkout_id, raw), body.payment.token,
                         shadow=shadow)
    order = await _core(request).orders.place_order(command)
    return _json(order_json(order), 201)


async def get_order(request: Request) -> JSONResponse:
    shadow = _shadow(request)
    order = await _core(request).carts.get_order(request.path_params["order_id"], shadow=shadow)
    return _json(order_json(order))


ROUTES = [
    Route("/carts", create_cart, methods=["POST"]),
    Route("/carts/{cart_id}", get_cart, methods=["GET"]),
    Route("/carts/{cart_id}/items", add_item, methods=["POST"]),
    Route("/carts/{cart_id}/items/{sku}", change_item, methods=["PATCH"]),
    Route("/carts/{cart_id}/items/{sku}", remove_item, methods=["DELETE"]),
    Route("/carts/{cart_id}/checkout", start_checkout, methods=["POST"]),
    Route("/checkouts/{checkout_id}/orders", place_order, methods=["POST"]),
    Route("/orders/{order_id}", get_order, methods=["GET"]),
]
