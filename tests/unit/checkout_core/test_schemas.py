from __future__ import annotations

import pytest

from checkout_core.domain.errors import ValidationFailed
from checkout_core.web import schemas
from checkout_core.web.problems import BadRequest


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"\xff\xfe", b'{"a": }'])
def test_malformed_json_is_a_bad_request(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        schemas.parse(schemas.AddItem, raw)


@pytest.mark.parametrize(
    ("model", "raw", "fields"),
    [
        (schemas.AddItem, b"[]", ["body"]),
        (schemas.AddItem, b"{}", ["sku", "quantity"]),
        (schemas.AddItem, b'{"sku": "X", "quantity": "2"}', ["quantity"]),
        (schemas.AddItem, b'{"sku": "X", "quantity": 1.5}', ["quantity"]),
        (schemas.AddItem, b'{"sku": "X", "quantity": true}', ["quantity"]),
        (schemas.AddItem, b'{"sku": 5, "quantity": 1}', ["sku"]),
        (schemas.CreateCart, b'{"country": "DE"}', ["currency"]),
        (schemas.StartCheckout, b'{"email": "a@b.example", "shipping_address": {}}',
         ["shipping_address.name", "shipping_address.line1", "shipping_address.city",
          "shipping_address.postal_code", "shipping_address.country"]),
        (schemas.PlaceOrderIn, b'{"payment": {"method": "cash", "token": "tok_visa"}}',
         ["payment.method"]),
        (schemas.PlaceOrderIn, b'{"payment": {"method": "card", "token": "visa"}}',
         ["payment.token"]),
        (schemas.PlaceOrderIn, b"{}", ["payment"]),
    ],
)
def test_shape_errors_name_their_fields(
    model: type[schemas.Body], raw: bytes, fields: list[str]
) -> None:
    with pytest.raises(ValidationFailed) as info:
        schemas.parse(model, raw)
    assert [e.field for e in info.value.errors] == fields


def test_parse_returns_the_model_and_the_json_value() -> None:
    body, value = schemas.parse(schemas.AddItem, b'{"sku": "X", "quantity": 2, "extra": 1}')
    assert (body.sku, body.quantity) == ("X", 2)
    assert value == {"sku": "X", "quantity": 2, "extra": 1}
