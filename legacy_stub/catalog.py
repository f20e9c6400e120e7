"""The seeded catalog, countries and promotion codes, shared with the checkout core.

The data lives in `catalog.json` beside this module and is validated once, at load.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Product(_Frozen):
    sku: str
    name: str
    funnel: str
    prices: dict[str, int]

    def price_in(self, currency: str) -> int:
        return self.prices[currency]


class Country(_Frozen):
    code: str = Field(pattern=r"^[A-Z]{2}$")
    tax_rate_bp: int = Field(ge=0, le=10_000)
    currencies: tuple[str, ...]


class Promotion(_Frozen):
    code: str
    kind: Literal["percent", "fixed"]
    value: int = Field(ge=0)
    min_subtotal: int = Field(ge=0)

    def applies_to(self, subtotal: int) -> bool:
        return subtotal >= self.min_subtotal


class Catalog(_Frozen):
    products: tuple[Product, ...]
    countries: tuple[Country, ...]
    promotions: tuple[Promotion, ...]

    def product(self, sku: str) -> Product | None:
        return next((p for p in self.products if p.sku == sku), None)

    def country(self, code: str) -> Country | None:
        return next((c for c in self.countries if c.code == code), None)

    def promotion(self, code: str) -> Promotion | None:
        return next((p for p in self.promotions if p.code == code), None)


@cache
def load_catalog() -> Catalog:
    """The catalog packaged with the stub (parsed once per process)."""
    text = resources.files(__package__).joinpath("catalog.json").read_text(encoding="utf-8")
    return Catalog.model_validate(json.loads(text))
