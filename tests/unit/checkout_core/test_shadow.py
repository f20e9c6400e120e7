"""Shadow traffic in the domain: marks inherited, traffic kept apart, no order for a shadow
checkout; and the pricing drift of fault drills: which money fields it changes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkout_core.domain import cart as carts
from checkout_core.domain.catalog import seeded_catalog
from checkout_core.domain.checkout import (
    Address,
    Payment,
    ensure_payable,
    place_order,
    start_checkout,
)
from checkout_core.domain.errors import (
    CheckoutCompleted,
    CoreError,
    NotShadow,
    ShadowCheckout,
    ShadowResource,
)
from checkout_core.domain.pricing import (
    DRIFT_KINDS,
    Line,
    PricingDrift,
    Taxation,
    price,
    tax_for,
    taxation,
)
from checkout_core.domain.shadow import check_traffic
from checkout_core.web.representations import cart_json, checkout_json

CATALOG = seeded_catalog()
ADDRESS = Address("Ada", "Main St 1", "Berlin", "10115", "DE")
NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def a_cart(country: str = "DE", *items: tuple[str, int], shadow: bool = False) -> carts.Cart:
    currency = "GBP" if country == "GB" else "USD" if country == "US" else "EUR"
    cart = carts.new_cart(CATALOG, "co_cart_1", country, currency, shadow)
    for sku, quantity in items:
        cart = carts.add_item(cart, CATALOG, sku, quantity)
    return cart


# --- marks and mixing ------------------------------------------------------------------------


def test_a_new_cart_is_real_unless_created_as_shadow() -> None:
    assert carts.new_cart(CATALOG, "co_cart_1", "DE", "EUR").shadow is False
    assert carts.new_cart(CATALOG, "co_cart_1", "DE", "EUR", shadow=True).shadow is True


@pytest.mark.parametrize("shadow", [True, False])
def test_items_and_the_checkout_inherit_the_mark_of_their_cart(shadow: bool) -> None:
    cart = a_cart("DE", ("HW-PHONE-6", 2), shadow=shadow)
    cart = carts.change_quantity(carts.add_item(cart, CATALOG, "AC-CASE-6", 1), "AC-CASE-6", 3)
    cart = carts.remove_item(cart, "AC-CASE-6")
    assert cart.shadow is shadow
    checkout, checked_out = start_checkout(cart, CATALOG, "co_chk_1", "a@b.example", ADDRESS,
                                           None)
    assert (checkout.shadow, checked_out.shadow) == (shadow, shadow)


@pytest.mark.parametrize(("resource", "request_", "error", "slug"), [
    (False, False, None, None),
    (True, True, None, None),
    (False, True, NotShadow, "not-shadow"),
    (True, False, ShadowResource, "shadow-resource"),
])
def test_shadow_and_real_traffic_never_mix(
    resource: bool, request_: bool, error: type[CoreError] | None, slug: str | None
) -> None:
    if error is None:
        check_traffic("cart co_cart_1", resource, request_)
        return
    with pytest.raises(error) as refused:
        check_traffic("cart co_cart_1", resource, request_)
    assert "cart co_cart_1" in refused.value.detail
    assert refused.value.code == slug


def test_no_order_is_ever_placed_for_a_shadow_checkout() -> None:
    cart = a_cart("DE", ("HW-PHONE-6", 1), shadow=True)
    checkout, _ = start_checkout(cart, CATALOG, "co_chk_1", "a@b.example", ADDRESS, None)
    with pytest.raises(ShadowCheckout) as refused:
        ensure_payable(checkout)
    assert refused.value.code == "shadow-checkout"
    with pytest.raises(ShadowCheckout):
        place_order(checkout, "co_ord_1", Payment("pay_1", "authorized", 1), NOW)
    # a completed shadow checkout is still refused as shadow, before anything else
    with pytest.raises(ShadowCheckout):
        ensure_payable(replace(checkout, status="completed"))
    with pytest.raises(CheckoutCompleted):
        ensure_payable(replace(checkout, status="completed", shadow=False))


def test_the_representations_do_not_show_the_mark() -> None:
    real = a_cart("DE", ("HW-PHONE-6", 1))
    shadow = replace(real, shadow=True)
    assert cart_json(carts.priced(shadow, CATALOG)) == cart_json(carts.priced(real, CATALOG))
    real_checkout, _ = start_checkout(real, CATALOG, "co_chk_1", "a@b.example", ADDRESS, None)
    shadow_checkout, _ = start_checkout(shadow, CATALOG, "co_chk_1", "a@b.example", ADDRESS,
                                        None)
    assert checkout_json(shadow_checkout) == checkout_json(real_checkout)


# --- the pricing drift -------------------------------------------------------------------


@pytest.mark.parametrize(("taxable", "rate_bp", "half_up", "down"), [
    (2999, 1900, 570, 569),      # 569.81
    (159800, 1900, 30362, 30362),  # 30362.0: exact, no difference
    (2, 2500, 1, 0),             # 0.5
    (1, 2500, 0, 0),             # 0.25
    (12345, 2550, 3148, 3147),   # 3147.975
    (0, 1900, 0, 0),
])
def test_tax_rounded_down(taxable: int, rate_bp: int, half_up: int, down: int) -> None:
    assert tax_for(taxable, rate_bp) == half_up
    assert tax_for(taxable, rate_bp, round_down=True) == down


@pytest.mark.parametrize(("drift", "country", "expected"), [
    (None, "DE", Taxation(1900)),
    (PricingDrift("DE", "tax_round_down"), "DE", Taxation(1900, round_down=True)),
    (PricingDrift("DE", "tax_round_down"), "FR", Taxation(2000)),
    (PricingDrift("DE", "tax_rate_plus_100bp"), "DE", Taxation(2000)),
    (PricingDrift("US", "tax_rate_plus_100bp"), "US", Taxation(100)),
    (PricingDrift("DE", "tax_rate_plus_100bp"), "NL", Taxation(2100)),
])
def test_a_drift_changes_the_taxation_of_its_country_only(
    drift: PricingDrift | None, country: str, expected: Taxation
) -> None:
    rate = CATALOG.country(country).tax_rate_bp
    assert taxation(country, rate, drift) == expected


@given(taxable=st.integers(0, 10**8), rate_bp=st.integers(0, 5000))
def test_rounding_down_takes_at_most_one_minor_unit(taxable: int, rate_bp: int) -> None:
    assert 0 <= tax_for(taxable, rate_bp) - tax_for(taxable, rate_bp, round_down=True) <= 1


@given(taxable=st.integers(100, 10**8), rate_bp=st.integers(0, 5000))
def test_one_point_more_always_shows_from_100_minor_units(taxable: int, rate_bp: int) -> None:
    assert tax_for(taxable, rate_bp + 100) > tax_for(taxable, rate_bp)


def test_price_takes_a_rate_or_a_taxation() -> None:
    lines = [Line("AC-CASE-6", "Phone case", 1, 2999)]
    assert price(lines, 1900) == price(lines, Taxation(1900))
    assert price(lines, Taxation(1900, round_down=True)).tax == 569


def changed_fields(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    return {key for key in before if before[key] != after[key]}


@pytest.mark.parametrize(("kind", "items", "tax", "drifted_tax"), [
    ("tax_round_down", [("AC-CASE-6", 1)], 570, 569),
    ("tax_round_down", [("HW-PHONE-6", 1), ("SB-CLOUD-1M", 1)], 15371, 15370),
    ("tax_rate_plus_100bp", [("HW-PHONE-6", 1)], 15181, 15980),
    ("tax_rate_plus_100bp", [("SB-CLOUD-1M", 1)], 190, 200),
])
def test_a_drift_changes_the_tax_and_the_total_of_carts_in_its_country_and_nothing_else(
    kind: Any, items: list[tuple[str, int]], tax: int, drifted_tax: int
) -> None:
    drift = PricingDrift("DE", kind)
    cart = a_cart("DE", *items)
    plain = cart_json(carts.priced(cart, CATALOG))
    drifted = cart_json(carts.priced(cart, CATALOG, drift))
    assert changed_fields(plain, drifted) == {"tax", "total"}
    assert (plain["tax"], drifted["tax"]) == (tax, drifted_tax)
    assert drifted["total"] - plain["total"] == drifted_tax - tax
    checkout, _ = start_checkout(cart, CATALOG, "co_chk_1", "a@b.example", ADDRESS, None)
    drifted_checkout, _ = start_checkout(cart, CATALOG, "co_chk_1", "a@b.example", ADDRESS,
                                         None, drift)
    assert changed_fields(checkout_json(checkout), checkout_json(drifted_checkout)) == \
        {"tax", "total"}
    assert drifted_checkout.totals.tax == drifted_tax
    for other in ("FR", "NL", "SE"):
        cart = a_cart(other, *items)
        assert carts.priced(cart, CATALOG, drift) == carts.priced(cart, CATALOG)


def test_a_drift_applies_after_the_discount() -> None:
    # WELCOME10 on a phone case: 2999 - 299 = 2700 taxable, 513.0 exactly: nothing to round
    cart = a_cart("DE", ("AC-CASE-6", 1))
    drifts = [PricingDrift("DE", "tax_round_down"), PricingDrift("DE", "tax_rate_plus_100bp")]
    taxes = [start_checkout(cart, CATALOG, "co_chk_1", "a@b.example", ADDRESS, "WELCOME10",
                            drift)[0].totals.tax for drift in (None, *drifts)]
    assert taxes == [513, 513, 540]


def test_an_empty_cart_is_never_drifted() -> None:
    cart = a_cart("DE")
    for kind in DRIFT_KINDS:
        drift = PricingDrift("DE", kind)
        assert carts.priced(cart, CATALOG, drift) == carts.priced(cart, CATALOG)
