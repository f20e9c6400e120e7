from __future__ import annotations

import pytest

from checkout_core.domain.catalog import seeded_catalog
from checkout_core.domain.errors import ValidationFailed

CATALOG = seeded_catalog()


@pytest.mark.parametrize(
    ("sku", "eur", "usd", "gbp", "sek"),
    [
        ("HW-LAPTOP-14", 129900, 139900, 114900, 1499900),
        ("HW-PHONE-6", 79900, 84900, 69900, 899900),
        ("AC-CASE-6", 2999, 3299, 2599, 34900),
        ("AC-CHARGER-65", 4999, 5499, 4499, 54900),
        ("WR-CARE-2Y", 14900, 15900, 12900, 169900),
        ("WR-CARE-3Y", 19900, 21900, 17900, 229900),
        ("SB-CLOUD-1M", 999, 999, 899, 10900),
    ],
)
def test_seeded_prices_per_currency(sku: str, eur: int, usd: int, gbp: int, sek: int) -> None:
    assert dict(CATALOG.products[sku].prices) == {"EUR": eur, "USD": usd, "GBP": gbp, "SEK": sek}


@pytest.mark.parametrize(
    ("country", "rate_bp", "currencies"),
    [
        ("DE", 1900, ("EUR",)), ("FR", 2000, ("EUR",)), ("NL", 2100, ("EUR",)),
        ("IE", 2300, ("EUR",)), ("PT", 2300, ("EUR",)), ("FI", 2550, ("EUR",)),
        ("SE", 2500, ("SEK", "EUR")), ("GB", 2000, ("GBP",)), ("US", 0, ("USD",)),
    ],
)
def test_countries(country: str, rate_bp: int, currencies: tuple[str, ...]) -> None:
    assert CATALOG.countries[country].tax_rate_bp == rate_bp
    assert CATALOG.countries[country].currencies == currencies


@pytest.mark.parametrize(
    ("country", "currency", "field"),
    [
        ("XX", "EUR", "country"),
        ("de", "EUR", "country"),
        ("DE", "USD", "currency"),
        ("SE", "GBP", "currency"),
        ("US", "EUR", "currency"),
    ],
)
def test_market_refuses_unknown_country_or_disallowed_currency(
    country: str, currency: str, field: str
) -> None:
    with pytest.raises(ValidationFailed) as info:
        CATALOG.market(country, currency)
    assert [e.field for e in info.value.errors] == [field]


@pytest.mark.parametrize(("country", "currency"), [("SE", "SEK"), ("SE", "EUR"), ("GB", "GBP")])
def test_market_accepts_allowed_currency(country: str, currency: str) -> None:
    assert CATALOG.market(country, currency).code == country


@pytest.mark.parametrize("code", ["WELCOME10", "welcome10", " SAVE20 "])
def test_promotion_codes_are_case_insensitive(code: str) -> None:
    assert CATALOG.promotion(code).code == code.strip().upper()


def test_unknown_promotion_names_the_field() -> None:
    with pytest.raises(ValidationFailed) as info:
        CATALOG.promotion("FREE")
    assert info.value.errors[0].field == "promotion_code"


def test_unknown_sku_names_the_field() -> None:
    with pytest.raises(ValidationFailed) as info:
        CATALOG.product("NOPE", "EUR")
    assert info.value.errors[0].field == "sku"
