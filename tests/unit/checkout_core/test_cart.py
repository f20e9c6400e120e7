from __future__ import annotations

from datetime import UTC, datetime

import pytest

from checkout_core.domain import cart as carts
from checkout_core.domain.catalog import seeded_catalog
from checkout_core.domain.checkout import Address, Payment, place_order, start_checkout
from checkout_core.domain.errors import (
    CartEmpty,
    CartNotOpen,
    CheckoutCompleted,
    NotFound,
    ValidationFailed,
)

CATALOG = seeded_catalog()
ADDRESS = Address("Ada", "Main St 1", "Berlin", "10115", "DE")


def cart(*items: tuple[str, int], status: carts.CartStatus = "open") -> carts.Cart:
    return carts.Cart("co_cart_1", "DE", "EUR", status, tuple(items))


def test_adding_a_new_sku_appends_a_line() -> None:
    updated = carts.add_item(cart(("HW-PHONE-6", 1)), CATALOG, "AC-CASE-6", 2)
    assert updated.items == (("HW-PHONE-6", 1), ("AC-CASE-6", 2))


def test_adding_a_sku_already_in_the_cart_adds_to_its_quantity() -> None:
    updated = carts.add_item(cart(("HW-PHONE-6", 1), ("AC-CASE-6", 1)), CATALOG, "HW-PHONE-6", 3)
    assert updated.items == (("HW-PHONE-6", 4), ("AC-CASE-6", 1))


@pytest.mark.parametrize(
    ("existing", "adding", "error"),
    [
        (0, 0, ValidationFailed),
        (0, -1, ValidationFailed),
        (0, 100, ValidationFailed),
        (98, 2, ValidationFailed),   # 100 after adding
        (98, 1, None),               # 99 is the most
        (0, 99, None),
    ],
)
def test_quantity_is_1_to_99_after_adding(
    existing: int, adding: int, error: type[Exception] | None
) -> None:
    start = cart(("HW-PHONE-6", existing)) if existing else cart()
    if error is None:
        assert carts.add_item(start, CATALOG, "HW-PHONE-6", adding).quantity_of("HW-PHONE-6") \
            == existing + adding
    else:
        with pytest.raises(error):
            carts.add_item(start, CATALOG, "HW-PHONE-6", adding)


def test_unknown_sku_is_a_validation_error() -> None:
    with pytest.raises(ValidationFailed):
        carts.add_item(cart(), CATALOG, "NOPE", 1)


@pytest.mark.parametrize(
    ("operation"),
    [
        lambda c: carts.add_item(c, CATALOG, "HW-PHONE-6", 1),
        lambda c: carts.change_quantity(c, "HW-PHONE-6", 2),
        lambda c: carts.remove_item(c, "HW-PHONE-6"),
    ],
)
def test_a_checked_out_cart_cannot_change(operation: object) -> None:
    with pytest.raises(CartNotOpen):
        operation(cart(("HW-PHONE-6", 1), status="checked_out"))  # type: ignore[operator]


@pytest.mark.parametrize(("quantity", "ok"), [(1, True), (99, True), (0, False), (100, False)])
def test_change_quantity_sets_it(quantity: int, ok: bool) -> None:
    start = cart(("HW-PHONE-6", 5))
    if ok:
        assert carts.change_quantity(start, "HW-PHONE-6", quantity).quantity_of("HW-PHONE-6") \
            == quantity
    else:
        with pytest.raises(ValidationFailed):
            carts.change_quantity(start, "HW-PHONE-6", quantity)


def test_changing_or_removing_a_sku_not_in_the_cart_is_not_found() -> None:
    with pytest.raises(NotFound):
        carts.change_quantity(cart(), "HW-PHONE-6", 1)
    with pytest.raises(NotFound):
        carts.remove_item(cart(), "HW-PHONE-6")


def test_remove_keeps_the_other_lines_in_order() -> None:
    start = cart(("A", 1), ("HW-PHONE-6", 1), ("B", 2))
    assert carts.remove_item(start, "HW-PHONE-6").items == (("A", 1), ("B", 2))


def test_priced_cart_matches_the_contract_example() -> None:
    priced = carts.priced(cart(("HW-PHONE-6", 2)), CATALOG)
    assert (priced.totals.subtotal, priced.totals.tax, priced.totals.total) == \
        (159800, 30362, 190162)
    assert priced.lines[0].name == 'Phone 6.1"'


def test_checkout_snapshots_the_cart_and_checks_it_out() -> None:
    checkout, checked_out = start_checkout(
        cart(("HW-PHONE-6", 2)), CATALOG, "co_chk_1", "a@b.example", ADDRESS, "welcome10"
    )
    assert checked_out.status == "checked_out"
    assert checkout.promotion_code == "WELCOME10"
    assert checkout.totals.total == 171146


@pytest.mark.parametrize(
    ("items", "email", "code", "error", "field"),
    [
        ((), "a@b.example", None, CartEmpty, None),
        ((("HW-PHONE-6", 1),), "not-an-email", None, ValidationFailed, "email"),
        ((("HW-PHONE-6", 1),), "a@b", None, ValidationFailed, "email"),
        ((("HW-PHONE-6", 1),), "a@b.example", "NOPE", ValidationFailed, "promotion_code"),
        ((("AC-CASE-6", 1),), "a@b.example", "SAVE20", ValidationFailed, "promotion_code"),
        ((("HW-PHONE-6", 1),), "a@b.example", "BIGSPENDER", ValidationFailed, "promotion_code"),
    ],
)
def test_checkout_refusals(
    items: tuple[tuple[str, int], ...], email: str, code: str | None,
    error: type[Exception], field: str | None,
) -> None:
    with pytest.raises(error) as info:
        start_checkout(cart(*items), CATALOG, "co_chk_1", email, ADDRESS, code)
    if field is not None:
        assert isinstance(info.value, ValidationFailed)
        assert info.value.errors[0].field == field


def test_checkout_of_a_checked_out_cart_is_refused() -> None:
    with pytest.raises(CartNotOpen):
        start_checkout(cart(("HW-PHONE-6", 1), status="checked_out"), CATALOG, "c", "a@b.example",
                       ADDRESS, None)


def test_an_order_completes_its_checkout_once() -> None:
    checkout, _ = start_checkout(cart(("HW-PHONE-6", 1)), CATALOG, "c", "a@b.example", ADDRESS,
                                 None)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    order, completed = place_order(checkout, "co_ord_1", Payment("pay_1", "authorized", 1), now)
    assert (order.total, completed.status) == (checkout.totals.total, "completed")
    with pytest.raises(CheckoutCompleted):
        place_order(completed, "co_ord_2", Payment("pay_2", "authorized", 1), now)
