"""The checkout HTTP contract (docs/contract.md): thin handlers over the services."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from checkout_core.bootstrap import Core
from checkout_core.domain.checkout import Address
from checkout_core.service.idempotency import fingerprint, valid_key
from checkout_core.service.ordering import PlaceOrder
from checkout_core.web import schemas
from checkout_core.web.problems import BadRequest
from checkout_core.web.representations import cart_json, checkout_json, order_json

IDEMPOTENCY_HEADER = "Idempotency-Key"


def _core(request: Request) -> Core:
    core: Core = request.app.state.core
    return core


def _json(body: object, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status)


async def create_cart(request: Request) -> JSONResponse:
    body, _ = schemas.parse(schemas.CreateCart, await schemas.read_body(request.stream()))
    priced = await _core(request).carts.create_cart(body.country, body.currency)
    return _json(cart_json(priced), 201)


async def get_cart(request: Request) -> JSONResponse:
    priced = await _core(request).carts.get_cart(request.path_params["cart_id"])
    return _json(cart_json(priced))


async def add_item(request: Request) -> JSONResponse:
    body, _ = schemas.parse(schemas.AddItem, await schemas.read_body(request.stream()))
    cart_id = request.path_params["cart_id"]
    priced = await _core(request).carts.add_item(cart_id, body.sku, body.quantity)
    return _json(cart_json(priced), 201)


async def change_item(request: Request) -> JSONResponse:
    body, _ = schemas.parse(schemas.ChangeQuantity, await schemas.read_body(request.stream()))
    params = request.path_params
    priced = await _core(request).carts.change_quantity(
        params["cart_id"], params["sku"], body.quantity
    )
    return _json(cart_json(priced))


async def remove_item(request: Request) -> JSONResponse:
    params = request.path_params
    priced = await _core(request).carts.remove_item(params["cart_id"], params["sku"])
    return _json(cart_json(priced))


async def start_checkout(request: Request) -> JSONResponse:
    body, _ = schemas.parse(schemas.StartCheckout, await schemas.read_body(request.stream()))
    a = body.shipping_address
    address = Address(a.name, a.line1, a.city, a.postal_code, a.country.upper(), a.line2)
    checkout = await _core(request).carts.start_checkout(
        request.path_params["cart_id"], body.email, address, body.promotion_code
    )
    return _json(checkout_json(checkout), 201)


def _idempotency_key(request: Request) -> str:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None or key == "":
        raise BadRequest("idempotency-key-missing", f"the {IDEMPOTENCY_HEADER} header is required")
    if not valid_key(key):
        raise BadRequest("idempotency-key-invalid",
                         f"{IDEMPOTENCY_HEADER} must be 1 to 255 printable ASCII characters")
    return key


async def place_order(request: Request) -> JSONResponse:
    key = _idempotency_key(request)
    body, raw = schemas.parse(schemas.PlaceOrderIn, await schemas.read_body(request.stream()))
    checkout_id = request.path_params["checkout_id"]
    command = PlaceOrder(checkout_id, key, fingerprint(checkout_id, raw), body.payment.token)
    order = await _core(request).orders.place_order(command)
    return _json(order_json(order), 201)


async def get_order(request: Request) -> JSONResponse:
    order = await _core(request).carts.get_order(request.path_params["order_id"])
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
