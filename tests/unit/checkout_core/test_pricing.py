from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkout_core.domain.catalog import Promotion, seeded_catalog
from checkout_core.domain.errors import ValidationFailed
from checkout_core.domain.pricing import (
    Line,
    Totals,
    check_promotion,
    discount_for,
    price,
    tax_for,
)

CATALOG = seeded_catalog()
WELCOME10 = CATALOG.promotions["WELCOME10"]
SAVE20 = CATALOG.promotions["SAVE20"]
BIGSPENDER = CATALOG.promotions["BIGSPENDER"]


@pytest.mark.parametrize(
    ("taxable", "rate_bp", "tax"),
    [
        (159800, 1900, 30362),   # the contract's cart example
        (143820, 1900, 27326),   # 27325.8 rounds up
        (10, 2500, 3),           # 2.5 rounds half up
        (2, 2500, 1),            # 0.5 rounds half up
        (1, 2500, 0),            # 0.25 rounds down
        (99999, 0, 0),           # US has no tax
        (0, 2300, 0),
        (12345, 2550, 3148),     # 3147.975
    ],
)
def test_tax_is_rate_of_taxable_rounded_half_up(taxable: int, rate_bp: int, tax: int) -> None:
    assert tax_for(taxable, rate_bp) == tax


@pytest.mark.parametrize(
    ("promotion", "subtotal", "discount"),
    [
        (None, 159800, 0),
        (WELCOME10, 159800, 15980),
        (WELCOME10, 999, 99),        # floor of 99.9
        (WELCOME10, 9, 0),
        (SAVE20, 10000, 2000),
        (Promotion("BIG", "fixed", 5000), 3000, 3000),  # never more than the subtotal
        (BIGSPENDER, 100001, 15000),  # floor of 15000.15
    ],
)
def test_discount(promotion: Promotion | None, subtotal: int, discount: int) -> None:
    assert discount_for(promotion, subtotal) == discount


@pytest.mark.parametrize(
    ("promotion", "subtotal", "accepted"),
    [
        (WELCOME10, 1, True),
        (SAVE20, 9999, False),
        (SAVE20, 10000, True),
        (BIGSPENDER, 99999, False),
        (BIGSPENDER, 100000, True),
    ],
)
def test_promotion_conditions_need_a_minimum_subtotal(
    promotion: Promotion, subtotal: int, accepted: bool
) -> None:
    if accepted:
        check_promotion(promotion, subtotal)
    else:
        with pytest.raises(ValidationFailed) as info:
            check_promotion(promotion, subtotal)
        assert info.value.errors[0].field == "promotion_code"


@pytest.mark.parametrize(
    ("lines", "rate_bp", "promotion", "totals"),
    [
        ([("HW-PHONE-6", 2, 79900)], 1900, None, Totals(159800, 0, 30362)),
        ([("HW-PHONE-6", 2, 79900)], 1900, WELCOME10, Totals(159800, 15980, 27326)),
        ([("AC-CASE-6", 1, 2999), ("AC-CHARGER-65", 2, 4999)], 2000, SAVE20,
         Totals(12997, 2000, 2199)),
        ([("HW-LAPTOP-14", 1, 139900)], 0, BIGSPENDER, Totals(139900, 20985, 0)),
        ([], 2500, None, Totals(0, 0, 0)),
    ],
)
def test_price_table(
    lines: list[tuple[str, int, int]], rate_bp: int, promotion: Promotion | None, totals: Totals
) -> None:
    priced = price([Line(sku, sku, qty, unit) for sku, qty, unit in lines], rate_bp, promotion)
    assert priced == totals


def test_contract_checkout_example_total() -> None:
    totals = price([Line("HW-PHONE-6", "Phone", 2, 79900)], 1900, WELCOME10)
    assert totals.total == 171146


@given(
    subtotal=st.integers(0, 10**9),
    rate_bp=st.integers(0, 10000),
    pct=st.integers(0, 100),
)
def test_totals_are_consistent_and_never_negative(subtotal: int, rate_bp: int, pct: int) -> None:
    totals = price([Line("X", "X", 1, subtotal)], rate_bp, Promotion("P", "percent", pct))
    assert 0 <= totals.discount <= totals.subtotal
    assert totals.total == totals.subtotal - totals.discount + totals.tax
    assert totals.total >= 0
