"""Request bodies of the contract, validated strictly (no coercion of JSON types).

Unknown fields are ignored. A refused body becomes `InvalidInput` with one field error
per problem, each naming its field by dotted path (`shipping_address.city`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from legacy_stub.errors import FieldError, InvalidInput
from legacy_stub.models import Address

Text = Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]
CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Quantity = Annotated[int, Field(ge=1, le=99)]
Email = Annotated[str, Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
Token = Annotated[str, Field(max_length=255, pattern=r"^tok_\S+$")]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class NewCart(_Body):
    country: CountryCode
    currency: CurrencyCode


class NewItem(_Body):
    sku: Annotated[str, Field(min_length=1, max_length=64)]
    quantity: Quantity


class ItemQuantity(_Body):
    quantity: Quantity


class ShippingAddress(_Body):
    name: Text
    line1: Text
    line2: Annotated[str, Field(max_length=200)] | None = None
    city: Text
    postal_code: Annotated[str, Field(min_length=1, max_length=20, pattern=r"\S")]
    country: CountryCode

    def to_address(self) -> Address:
        return Address(
            self.name, self.line1, self.city, self.postal_code, self.country, self.line2
        )


class NewCheckout(_Body):
    email: Email
    shipping_address: ShippingAddress
    promotion_code: Annotated[str, Field(max_length=64)] | None = None


class PaymentMethod(_Body):
    method: Literal["card"]
    token: Token


class NewOrder(_Body):
    payment: PaymentMethod


BodyT = TypeVar("BodyT", bound=_Body)


def _field_error(error: Any) -> FieldError:
    path = ".".join(str(part) for part in error["loc"])
    return FieldError(path, str(error["msg"]))


def invalid_input(exc: ValidationError) -> InvalidInput:
    """One field error per pydantic error, each named by its dotted path."""
    return InvalidInput(*(_field_error(e) for e in exc.errors()))


def parse(model: type[BodyT], data: dict[str, Any]) -> BodyT:
    """Validate `data` as `model`, or raise `InvalidInput` naming every bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_input(exc) from exc
