"""The `shadow:` section of the rules: validation, defaults, refusal of order placement."""

from __future__ import annotations

import pytest

from control.rules import shadow_changes
from control.rules_loader import RulesError, load_rules_text
from control.rules_schema import RulesFile
from shadow.routes import CART_BUILDING, MIRRORABLE
from shadow.spec import DEFAULT_MIN_UNITS, ShadowConfig

BASE = """\
schema: 1
funnels:
  - name: warranties
    match: {header: warranties}
    salt: w1
    shadow:
      share: 12.5
      ignore: ['items[sku].name']
      tolerances: {tax: 1}
    rules:
      - id: ie
        countries: [IE]
        percent: 0
        shadow: {share: 100}
      - id: rest
        countries: '*'
        percent: 5
"""
SHARE_LINE = 7


def load(text: str) -> object:
    return load_rules_text(text, "1", "r.yaml")


def issue_of(text: str) -> tuple[int | None, str, str]:
    with pytest.raises(RulesError) as info:
        load(text)
    issue = info.value.issues[0]
    assert issue.source == "r.yaml"
    return issue.line, issue.field, issue.message


def test_the_funnel_shadow_compiles_with_its_defaults() -> None:
    funnel = load_rules_text(BASE, "1").funnel("warranties")
    assert funnel is not None
    assert funnel.shadow == ShadowConfig(
        basis_points=1250, routes=CART_BUILDING, ignore=("items[sku].name",),
        tolerances=(("tax", 1.0),), min_units=DEFAULT_MIN_UNITS)


def test_the_default_routes_are_every_cart_building_route_and_nothing_else() -> None:
    assert sorted(CART_BUILDING) == sorted([
        "POST /carts", "GET /carts/{cart_id}", "POST /carts/{cart_id}/items",
        "PATCH /carts/{cart_id}/items/{sku}", "DELETE /carts/{cart_id}/items/{sku}",
        "POST /carts/{cart_id}/checkout",
    ])
    assert {r.key for r in MIRRORABLE} == CART_BUILDING


def test_a_rule_shadow_is_merged_over_the_funnel_shadow_for_its_countries() -> None:
    funnel = load_rules_text(BASE, "1").funnel("warranties")
    assert funnel is not None
    ie = funnel.shadow_for("IE")
    assert ie is not None and ie.basis_points == 10_000
    assert ie.ignore == ("items[sku].name",)  # kept from the funnel
    assert funnel.shadow_for("DE") == funnel.shadow  # the catch-all rule has no shadow
    assert funnel.shadow_for(None) == funnel.shadow


def test_share_zero_on_a_rule_switches_the_shadow_off_for_it() -> None:
    text = BASE.replace("shadow: {share: 100}", "shadow: {share: 0}")
    funnel = load_rules_text(text, "1").funnel("warranties")
    assert funnel is not None
    ie = funnel.shadow_for("IE")
    assert ie is not None and ie.basis_points == 0
    assert ie.describe() == "shadow off (share 0%)"


def test_no_shadow_section_means_no_shadow() -> None:
    text = BASE.replace(BASE[BASE.index("    shadow:"):BASE.index("    rules:")], "")
    text = text.replace("        shadow: {share: 100}\n", "")
    funnel = load_rules_text(text, "1").funnel("warranties")
    assert funnel is not None
    assert funnel.shadow is None and funnel.shadow_for("IE") is None
    assert funnel.shadow_lines() == []


def test_the_rule_set_names_its_shadowed_funnels_and_its_countries() -> None:
    only_rule = BASE.replace(BASE[BASE.index("    shadow:"):BASE.index("    rules:")], "")
    none = only_rule.replace("        shadow: {share: 100}\n", "")
    assert load_rules_text(BASE, "1").shadowed_funnels == {"warranties"}
    assert load_rules_text(only_rule, "1").shadowed_funnels == {"warranties"}  # a rule's
    assert load_rules_text(none, "1").shadowed_funnels == frozenset()
    assert load_rules_text(BASE, "1").named_countries == {"IE"}


def test_routes_are_canonicalised() -> None:
    text = BASE.replace("      share: 12.5\n", "      share: 12.5\n      routes: ['post /carts', "
                        "'POST /carts/{id}/items/', 'GET /carts/{cart}']\n")
    funnel = load_rules_text(text, "1").funnel("warranties")
    assert funnel is not None and funnel.shadow is not None
    assert funnel.shadow.routes == {"POST /carts", "POST /carts/{cart_id}/items",
                                    "GET /carts/{cart_id}"}


def test_describe_names_share_routes_ignores_tolerances_and_min_units() -> None:
    funnel = load_rules_text(BASE, "1").funnel("warranties")
    assert funnel is not None and funnel.shadow is not None
    assert funnel.shadow.describe() == (
        "shadow 12.5% of legacy-served units; all cart-building routes; ignoring "
        "items[sku].name; tolerances tax ±1; parity needs 100 compared units")
    assert funnel.shadow_lines() == [
        f"warranties: {funnel.shadow.describe()}",
        ("warranties / rule ie: shadow 100% of legacy-served units; all cart-building routes; "
         "ignoring items[sku].name; tolerances tax ±1; parity needs 100 compared units"),
    ]
    assert funnel.shadow.to_json()["percent"] == 12.5


ORDER_ROUTES = [
    "POST /checkouts/{checkout_id}/orders",
    "post /checkouts/{id}/orders",
    "POST /checkouts/lg_chk_1/orders",
    "POST /checkouts/{checkout_id}/orders/",
]


@pytest.mark.parametrize("route", ORDER_ROUTES)
def test_the_loader_refuses_order_placement_whatever_it_is_spelled(route: str) -> None:
    text = BASE.replace("      share: 12.5\n",
                        f"      share: 12.5\n      routes: ['POST /carts', '{route}']\n")
    line, field, message = issue_of(text)
    assert (line, field) == (SHARE_LINE + 1, "funnels[0].shadow.routes[1]")
    assert "places an order" in message and "never mirrored" in message


def test_the_loader_refuses_order_placement_in_a_rule_too() -> None:
    text = BASE.replace("shadow: {share: 100}",
                        "shadow: {routes: ['POST /checkouts/{checkout_id}/orders']}")
    line, field, message = issue_of(text)
    assert (line, field) == (14, "funnels[0].rules[0].shadow.routes[0]")
    assert "places an order" in message


def test_reading_an_order_is_refused_too() -> None:
    text = BASE.replace("      share: 12.5\n", "      share: 12.5\n      routes: "
                        "['GET /orders/{order_id}']\n")
    _, field, message = issue_of(text)
    assert field == "funnels[0].shadow.routes[0]"
    assert "no order is ever placed in the shadow" in message


BAD = [
    # (replace, with, line, field, words)
    ("share: 12.5", "share: 100.5", SHARE_LINE, "funnels[0].shadow.share", "less than or equal"),
    ("share: 12.5", "share: -1", SHARE_LINE, "funnels[0].shadow.share", "greater than or equal"),
    ("share: 12.5", "share: 0.001", SHARE_LINE, "funnels[0].shadow.share", "decimal places"),
    ("      share: 12.5\n", "", 6, "funnels[0].shadow.share", "Field required"),
    ("share: 12.5", "share: 1\n      routes: ['PUT /carts']", 8,
     "funnels[0].shadow.routes[0]", "not a route of the checkout contract"),
    ("share: 12.5", "share: 1\n      routes: [carts]", 8, "funnels[0].shadow.routes[0]",
     "write METHOD /path"),
    ("share: 12.5", "share: 1\n      routes: []", 8, "funnels[0].shadow.routes",
     "at least 1"),
    ("share: 12.5", "share: 1\n      routes: ['POST /carts', 'post /carts']", 8,
     "funnels[0].shadow.routes", "listed twice"),
    ("['items[sku].name']", "['items..name']", 8, "funnels[0].shadow.ignore[0]",
     "not a field path"),
    ("['items[sku].name']", "['tax', 'tax']", 8, "funnels[0].shadow.ignore", "listed twice"),
    ("{tax: 1}", "{tax: -1}", 9, "funnels[0].shadow.tolerances.tax", "greater than or equal"),
    ("{tax: 1}", "{'a b': 1}", 9, "funnels[0].shadow.tolerances.'a b'", "not a field path"),
    ("      share: 12.5\n", "      share: 12.5\n      colour: red\n", 8,
     "funnels[0].shadow.colour", "unknown key"),
    ("      share: 12.5\n", "      share: 12.5\n      min_units: 0\n", 8,
     "funnels[0].shadow.min_units", "greater than or equal"),
    ("shadow: {share: 100}", "shadow: {share: 200}", 14, "funnels[0].rules[0].shadow.share",
     "less than or equal"),
    ("shadow: {share: 100}", "shadow: {mirror: yes}", 14, "funnels[0].rules[0].shadow.mirror",
     "unknown key"),
]


@pytest.mark.parametrize(("old", "new", "line", "field", "words"), BAD)
def test_bad_shadow_sections_name_file_line_and_field(old: str, new: str, line: int, field: str,
                                                      words: str) -> None:
    assert old in BASE
    got_line, got_field, message = issue_of(BASE.replace(old, new, 1))
    assert (got_line, got_field) == (line, field), message
    assert words in message


def test_a_rule_shadow_without_a_funnel_shadow_needs_a_share() -> None:
    text = BASE.replace(BASE[BASE.index("    shadow:"):BASE.index("    rules:")], "")
    text = text.replace("shadow: {share: 100}", "shadow: {ignore: [tax]}")
    line, field, message = issue_of(text)
    assert (line, field) == (10, "funnels[0].rules[0].shadow")
    assert "needs a share" in message
    ok = load_rules_text(text.replace("{ignore: [tax]}", "{share: 5, ignore: [tax]}"), "1")
    funnel = ok.funnel("warranties")
    assert funnel is not None and funnel.shadow is None
    ie = funnel.shadow_for("IE")
    assert ie is not None and (ie.basis_points, ie.ignore) == (500, ("tax",))


def test_the_json_schema_knows_the_shadow_section() -> None:
    schema = RulesFile.model_json_schema(by_alias=True)
    assert "ShadowSpec" in schema["$defs"] and "ShadowOverrideSpec" in schema["$defs"]


def test_shadow_changes_say_what_a_rules_change_does_to_the_shadow() -> None:
    old = load_rules_text(BASE, "1")
    assert shadow_changes(old, old) == []
    new = load_rules_text(BASE.replace("share: 12.5", "share: 50").replace(
        "shadow: {share: 100}", "shadow: {share: 0}"), "2")
    changes = shadow_changes(old, new)
    assert changes[0].startswith("warranties: shadow 12.5% of legacy-served units")
    assert "-> shadow 50% of legacy-served units" in changes[0]
    assert changes[1] == ("warranties / rule ie: shadow 100% of legacy-served units; all "
                          "cart-building routes; ignoring items[sku].name; tolerances tax ±1; "
                          "parity needs 100 compared units -> shadow off (share 0%)")
    assert len(changes) == 2
    none = load_rules_text(BASE.replace(BASE[BASE.index("    shadow:"):BASE.index("    rules:")],
                                        "").replace("        shadow: {share: 100}\n", ""), "3")
    assert shadow_changes(none, old)[0].startswith("warranties: no shadow -> shadow 12.5%")
    assert shadow_changes(None, none) == []
