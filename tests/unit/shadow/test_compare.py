"""Comparing legacy's and the core's responses field by field."""

from __future__ import annotations

import copy
import gzip
import json
from typing import Any

import pytest

from shadow.compare import (
    BODY,
    REDACTED,
    STATUS,
    FieldResult,
    RawBody,
    compare,
    example,
    is_customer_path,
    mismatches,
    normal_path,
    parse_body,
)

IDS = {"lg_cart_1": "co_cart_1", "lg_chk_1": "co_chk_1"}


def cart(prefix: str = "lg", **over: Any) -> dict[str, Any]:
    body = {
        "id": f"{prefix}_cart_1", "country": "DE", "currency": "EUR", "status": "open",
        "items": [
            {"sku": "HW-PHONE-6", "name": "Phone 6.1\"", "quantity": 2, "unit_price": 79900,
             "line_total": 159800},
            {"sku": "AC-CASE-6", "name": "Phone case", "quantity": 1, "unit_price": 2999,
             "line_total": 2999},
        ],
        "subtotal": 162799, "tax": 30932, "total": 193731,
    }
    body.update(over)
    return body


def checkout(prefix: str = "lg", line2: bool = True) -> dict[str, Any]:
    address: dict[str, Any] = {"name": "Ada Lovelace", "line1": "Hauptstr. 1", "city": "Berlin",
                               "postal_code": "10115", "country": "DE"}
    if line2:
        address["line2"] = None
    return {
        "id": f"{prefix}_chk_1", "cart_id": f"{prefix}_cart_1", "status": "open",
        "email": "ada@example.com", "shipping_address": address, "country": "DE",
        "currency": "EUR", "items": cart(prefix)["items"], "promotion_code": None,
        "subtotal": 162799, "discount": 0, "tax": 30932, "total": 193731,
    }


def bad(results: list[FieldResult]) -> dict[str, tuple[Any, Any]]:
    return {r.where: (r.legacy, r.core) for r in mismatches(results)}


def test_identical_carts_match_on_every_field() -> None:
    results = compare(201, cart(), 201, cart("co"), ids=IDS)
    assert mismatches(results) == []
    paths = {r.path for r in results}
    assert {STATUS, "id", "country", "currency", "status", "subtotal", "tax", "total",
            "items[sku].quantity", "items[sku].unit_price", "items[sku].line_total",
            "items[sku].name"} <= paths


def test_a_tax_difference_names_exactly_the_tax_field() -> None:
    results = compare(201, cart(), 201, cart("co", tax=30931), ids=IDS)
    assert bad(results) == {"tax": (30932, 30931)}
    (tax,) = mismatches(results)
    assert (tax.path, tax.kind) == ("tax", "money")


def test_items_are_matched_by_sku_whatever_their_order() -> None:
    core = cart("co")
    core["items"] = list(reversed(core["items"]))
    assert mismatches(compare(200, cart(), 200, core, ids=IDS)) == []
    core["items"][0]["line_total"] += 1
    results = compare(200, cart(), 200, core, ids=IDS)
    assert bad(results) == {"items[AC-CASE-6].line_total": (2999, 3000)}
    assert mismatches(results)[0].path == "items[sku].line_total"


def test_an_item_on_one_side_only_is_a_mismatch_of_the_item() -> None:
    core = cart("co")
    extra = core["items"].pop()
    results = compare(200, cart(), 200, core, ids=IDS)
    (missing,) = mismatches(results)
    assert (missing.path, missing.where, missing.kind) == ("items[sku]", "items[AC-CASE-6]",
                                                          "item")
    assert (missing.legacy, missing.core) == (extra, None)


def test_ids_are_compared_through_the_map() -> None:
    legacy, core = checkout(), checkout("co")
    results = compare(201, legacy, 201, core, ids=IDS)
    assert mismatches(results) == []
    ids = {r.path: r for r in results if r.kind == "id"}
    assert set(ids) == {"id", "cart_id"}
    core["cart_id"] = "co_cart_other"
    assert bad(compare(201, legacy, 201, core, ids=IDS)) == {
        "cart_id": ("lg_cart_1", "co_cart_other")}


def test_ids_the_map_does_not_know_are_left_out() -> None:
    results = compare(201, cart(), 201, cart("co"), ids={})
    assert "id" not in {r.path for r in results}
    order_l = {"id": "lg_ord_1", "payment": {"id": "pay_abc", "amount": 5}}
    order_c = {"id": "co_ord_1", "payment": {"id": "pay_xyz", "amount": 5}}
    assert mismatches(compare(201, order_l, 201, order_c)) == []


def test_timestamps_and_backend_names_are_left_out() -> None:
    legacy = {"created_at": "2026-01-01T00:00:00Z", "backend": "legacy", "x": 1}
    core = {"created_at": "2026-01-02T00:00:00Z", "backend": "core", "x": 1}
    results = compare(200, legacy, 200, core)
    assert [r.path for r in results] == [STATUS, "x"]


def test_null_and_absent_are_the_same() -> None:
    # the core leaves `line2` out when it is null; legacy writes `"line2": null`
    results = compare(201, checkout(line2=True), 201, checkout("co", line2=False), ids=IDS)
    assert mismatches(results) == []


def test_money_is_an_integer_compared_exactly() -> None:
    assert bad(compare(200, cart(), 200, cart("co", total=193731.0), ids=IDS)) == {
        "total": (193731, 193731.0)}
    assert bad(compare(200, cart(), 200, cart("co", total="193731"), ids=IDS)) == {
        "total": (193731, "193731")}
    # a number that is not money may be an int on one side, a float on the other
    assert mismatches(compare(200, {"ratio": 1}, 200, {"ratio": 1.0})) == []
    assert bad(compare(200, {"flag": True}, 200, {"flag": 1})) == {"flag": (True, 1)}


def test_a_tolerance_allows_a_numeric_difference() -> None:
    core = cart("co", tax=30933)
    assert mismatches(compare(200, cart(), 200, core, ids=IDS, tolerances={"tax": 1})) == []
    assert bad(compare(200, cart(), 200, cart("co", tax=30934), ids=IDS,
                       tolerances={"tax": 1})) == {"tax": (30932, 30934)}
    core = cart("co")
    core["items"][0]["line_total"] += 2
    assert mismatches(compare(200, cart(), 200, core, ids=IDS,
                              tolerances={"items[sku].line_total": 2})) == []
    assert mismatches(compare(200, cart(), 200, core, ids=IDS,
                              tolerances={"items.line_total": 2})) == []


@pytest.mark.parametrize(("ignore", "left"), [
    ("tax", {"items[HW-PHONE-6].line_total"}),
    ("items", {"tax"}),
    ("items[sku]", {"tax"}),
    ("items.line_total", {"tax"}),
    ("items[sku].line_total", {"tax"}),
])
def test_ignore_leaves_a_field_and_everything_under_it_out(ignore: str, left: set[str]) -> None:
    core = cart("co", tax=1)
    core["items"][0]["line_total"] = 1
    results = compare(200, cart(), 200, core, ids=IDS, ignore=[ignore])
    assert set(bad(results)) == left
    gone = normal_path(ignore)
    assert not any(normal_path(r.path) == gone or normal_path(r.path).startswith(gone + ".")
                   for r in results)


def test_different_statuses_are_one_mismatch_and_nothing_else() -> None:
    problem = {"type": "https://checkout.example/problems/validation-error", "status": 422}
    results = compare(201, cart(), 422, problem, ids=IDS)
    assert [(r.path, r.equal, r.legacy, r.core) for r in results] == [
        (STATUS, False, 201, 422)]


def test_errors_are_compared_by_problem_type_and_fields() -> None:
    slug = "https://checkout.example/problems/"
    legacy = {"type": slug + "validation-error", "title": "Invalid input", "status": 422,
              "detail": "quantity must be 1..99", "instance": "/carts/lg_cart_1/items",
              "errors": [{"field": "quantity", "message": "too big"}]}
    core = {"type": slug + "validation-error", "title": "Validation failed", "status": 422,
            "detail": "bad quantity", "instance": "/carts/co_cart_1/items",
            "errors": [{"field": "quantity", "message": "must be at most 99"}]}
    results = compare(422, legacy, 422, core, ids=IDS)
    assert mismatches(results) == []
    assert {r.path for r in results} == {STATUS, "type", "errors[].field"}
    core["type"] = slug + "cart-not-open"
    assert set(bad(compare(422, legacy, 422, core))) == {"type"}


def test_bodies_that_are_not_json_are_compared_byte_for_byte() -> None:
    assert mismatches(compare(200, RawBody(b"ok"), 200, RawBody(b"ok"))) == []
    (diff,) = mismatches(compare(200, RawBody(b"ok"), 200, {"a": 1}))
    assert diff.path == BODY


def test_parse_body_undoes_gzip_and_keeps_what_is_not_json() -> None:
    data = {"a": 1}
    assert parse_body(gzip.compress(json.dumps(data).encode()), "gzip") == data
    assert parse_body(b"not json") == RawBody(b"not json")
    assert parse_body(b"\x00garbage", "gzip") == RawBody(b"\x00garbage")


def test_compare_does_not_change_its_inputs() -> None:
    legacy, core = checkout(), checkout("co", line2=False)
    before = copy.deepcopy((legacy, core))
    compare(201, legacy, 201, core, ids=IDS)
    assert (legacy, core) == before


# -- redaction -------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "customer"), [
    ("email", True), ("shipping_address.name", True), ("shipping_address.city", True),
    ("shipping_address", True), ("billing_address.line1", True), ("phone", True),
    ("customer.first_name", True), ("name", True),
    ("items[sku].name", False), ("tax", False), ("country", False), ("promotion_code", False),
])
def test_customer_paths(path: str, customer: bool) -> None:
    assert is_customer_path(path) is customer


def test_examples_redact_customer_data() -> None:
    legacy, core = checkout(), checkout("co")
    core["email"] = "someone@else.example"
    core["shipping_address"]["city"] = "Hamburg"
    core["tax"] = 1
    results = mismatches(compare(201, legacy, 201, core, ids=IDS))
    shown = {e["where"]: e for e in map(example, results)}
    assert shown["email"]["legacy"] == shown["email"]["core"] == REDACTED
    assert shown["shipping_address.city"]["core"] == REDACTED
    assert shown["tax"]["legacy"] == 30932 and shown["tax"]["core"] == 1
    assert "ada@example.com" not in json.dumps(list(shown.values()))
    assert "Hamburg" not in json.dumps(list(shown.values()))


def test_a_whole_object_in_an_example_is_scrubbed_inside() -> None:
    result = FieldResult("order", "order", False,
                         {"email": "a@b.example", "total": 5, "items": [{"name": "Phone"}]},
                         None, "value")
    shown = example(result)
    assert shown["legacy"] == {"email": REDACTED, "total": 5, "items": [{"name": "Phone"}]}


def test_long_values_are_clipped_in_examples() -> None:
    shown = example(FieldResult("note", "note", False, "x" * 1000, "y", "value"))
    assert len(shown["legacy"]) <= 200
