"""The seeded catalog, countries and promotion codes of docs/contract.md (immutable data)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from checkout_core.domain.errors import ValidationFailed


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    funnel: str
    prices: Mapping[str, int]
    """Unit price in minor units per ISO 4217 currency."""


@dataclass(frozen=True, slots=True)
class Country:
    code: str
    tax_rate_bp: int
    currencies: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Promotion:
    code: str
    kind: Literal["percent", "fixed"]
    value: int
    """Percent (0-100) or a fixed amount in minor units."""
    min_subtotal: int = 0


def _product(sku: str, name: str, funnel: str, eur: int, usd: int, gbp: int, sek: int) -> Product:
    prices = MappingProxyType({"EUR": eur, "USD": usd, "GBP": gbp, "SEK": sek})
    return Product(sku, name, funnel, prices)


PRODUCTS: tuple[Product, ...] = (
    _product("HW-LAPTOP-14", 'Laptop 14"', "hardware", 129900, 139900, 114900, 1499900),
    _product("HW-PHONE-6", 'Phone 6.1"', "hardware", 79900, 84900, 69900, 899900),
    _product("AC-CASE-6", "Phone case", "accessories", 2999, 3299, 2599, 34900),
    _product("AC-CHARGER-65", "65 W charger", "accessories", 4999, 5499, 4499, 54900),
    _product("WR-CARE-2Y", "2-year care", "warranties", 14900, 15900, 12900, 169900),
    _product("WR-CARE-3Y", "3-year care", "warranties", 19900, 21900, 17900, 229900),
    _product("SB-CLOUD-1M", "Cloud storage, monthly", "subscriptions", 999, 999, 899, 10900),
)

COUNTRIES: tuple[Country, ...] = (
    Country("DE", 1900, ("EUR",)),
    Country("FR", 2000, ("EUR",)),
    Country("NL", 2100, ("EUR",)),
    Country("IE", 2300, ("EUR",)),
    Country("PT", 2300, ("EUR",)),
    Country("FI", 2550, ("EUR",)),
    Country("SE", 2500, ("SEK", "EUR")),
    Country("GB", 2000, ("GBP",)),
    Country("US", 0, ("USD",)),
)

PROMOTIONS: tuple[Promotion, ...] = (
    Promotion("WELCOME10", "percent", 10),
    Promotion("SAVE20", "fixed", 2000, min_subtotal=10000),
    Promotion("BIGSPENDER", "percent", 15, min_subtotal=100000),
)


@dataclass(frozen=True, slots=True)
class Catalog:
    """Lookups over the seeded data; raises `ValidationFailed` naming the offending field."""

    products: Mapping[str, Product]
    countries: Mapping[str, Country]
    promotions: Mapping[str, Promotion]

    def product(self, sku: str, currency: str) -> Product:
        product = self.products.get(sku)
        if product is None:
            raise ValidationFailed.field("sku", f"unknown sku {sku!r}")
        if currency not in product.prices:
            raise ValidationFailed.field("sku", f"{sku} is not sold in {currency}")
        return product

    def country(self, code: str) -> Country:
        country = self.countries.get(code)
        if country is None:
            raise ValidationFailed.field("country", f"unknown country {code!r}")
        return country

    def market(self, country_code: str, currency: str) -> Country:
        """The country, checked to allow `currency`."""
        country = self.country(country_code)
        if currency not in country.currencies:
            allowed = ", ".join(country.currencies)
            raise ValidationFailed.field(
                "currency", f"{country.code} sells in {allowed}, not {currency!r}"
            )
        return country

    def promotion(self, code: str) -> Promotion:
        promotion = self.promotions.get(code.strip().upper())
        if promotion is None:
            raise ValidationFailed.field("promotion_code", f"unknown promotion code {code!r}")
        return promotion


def seeded_catalog() -> Catalog:
    return Catalog(
        products=MappingProxyType({p.sku: p for p in PRODUCTS}),
        countries=MappingProxyType({c.code: c for c in COUNTRIES}),
        promotions=MappingProxyType({p.code: p for p in PROMOTIONS}),
    )
