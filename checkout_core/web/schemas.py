"""Request bodies: parsed and checked once, at the edge, into typed values."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from checkout_core.config import Millis, PricingDriftSetting, Rate
from checkout_core.domain.errors import FieldError, ValidationFailed
from checkout_core.faults import Faults
from checkout_core.web.problems import BadRequest, BodyTooLarge

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
M = TypeVar("M", bound=BaseModel)


class Body(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True)


class CreateCart(Body):
    country: Annotated[str, StringConstraints(max_length=8)]
    currency: Annotated[str, StringConstraints(max_length=8)]


class AddItem(Body):
    sku: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    quantity: int


class ChangeQuantity(Body):
    quantity: int


class AddressIn(Body):
    name: Text
    line1: Text
    line2: Text | None = None
    city: Text
    postal_code: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                                   max_length=20)]
    country: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$")]


class StartCheckout(Body):
    email: Annotated[str, StringConstraints(strip_whitespace=True, max_length=254)]
    shipping_address: AddressIn
    promotion_code: Annotated[str, StringConstraints(max_length=64)] | None = None


class PaymentIn(Body):
    method: Literal["card"]
    token: Annotated[str, StringConstraints(pattern=r"^tok_[A-Za-z0-9_]{1,100}$")]


class PlaceOrderIn(Body):
    payment: PaymentIn


class FaultsIn(Body):
    """`PUT /_faults`: the whole fault setting; a field left out is that fault switched off."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    latency_ms: Millis = 0
    latency_jitter_ms: Millis = 0
    error_rate: Rate = 0.0
    decline_rate: Rate = 0.0
    unavailable_for_s: Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)] = 0.0
    pricing_drift: PricingDriftSetting | None = None

    def to_faults(self) -> Faults:
        drift = self.pricing_drift.to_drift() if self.pricing_drift is not None else None
        return Faults(latency_ms=self.latency_ms, latency_jitter_ms=self.latency_jitter_ms,
                      error_rate=self.error_rate, decline_rate=self.decline_rate,
                      unavailable_for_s=self.unavailable_for_s, pricing_drift=drift)


MAX_BODY_BYTES = 64 * 1024


async def read_body(chunks: AsyncGenerator[bytes, None], limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused with 413 as soon as it grows past `limit` bytes."""
    body = bytearray()
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            body += chunk
            if len(body) > limit:
                raise BodyTooLarge("request-too-large", f"the body exceeds {limit} bytes")
    return bytes(body)


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadRequest("malformed-json", f"the body is not valid JSON: {exc}") from None


def parse(model: type[M], raw: bytes) -> tuple[M, Any]:
    """The body as `model`, and the JSON value it came from; 400 or 422 when it is not."""
    value = parse_json(raw)
    try:
        return model.model_validate_json(raw), value
    except ValidationError as exc:
        raise ValidationFailed(*_field_errors(exc)) from None


def _field_errors(exc: ValidationError) -> list[FieldError]:
    return [
        FieldError(".".join(str(part) for part in err["loc"]) or "body", err["msg"])
        for err in exc.errors()
    ]
