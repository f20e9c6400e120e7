"""Which legacy-served requests are mirrored."""

from __future__ import annotations

import pytest

from control.bucketing import bucket
from control.decision import Backend, Decision, Reason
from control.rules_loader import load_rules_text
from shadow.routes import CART_BUILDING, ROUTES, RouteTemplate, match_route, route_of
from shadow.selection import (
    SHADOW_SEED,
    mirrorable_decision,
    route_request,
    select,
    select_request,
    selection,
    shadow_bucket,
)
from shadow.spec import ShadowConfig

ALL = ShadowConfig(basis_points=10_000)
UNITS = [f"u_{i:06d}" for i in range(4000)]

CART_BUILDING_REQUESTS = [
    ("POST", "/carts", "POST /carts"),
    ("GET", "/carts/lg_cart_1", "GET /carts/{cart_id}"),
    ("POST", "/carts/lg_cart_1/items", "POST /carts/{cart_id}/items"),
    ("PATCH", "/carts/lg_cart_1/items/HW-PHONE-6", "PATCH /carts/{cart_id}/items/{sku}"),
    ("DELETE", "/carts/lg_cart_1/items/HW-PHONE-6", "DELETE /carts/{cart_id}/items/{sku}"),
    ("POST", "/carts/lg_cart_1/checkout", "POST /carts/{cart_id}/checkout"),
]


@pytest.mark.parametrize(("method", "path", "key"), CART_BUILDING_REQUESTS)
def test_every_cart_building_request_is_mirrored_at_100_percent(method: str, path: str,
                                                                key: str) -> None:
    selected = select(ALL, "s", "u_1", method, path)
    assert selected is not None
    assert selected.route_key == key
    assert selected.config is ALL


def test_the_path_parameters_come_with_the_selection() -> None:
    selected = select(ALL, "s", "u_1", "PATCH", "/carts/lg_cart_9/items/AC-CASE-6")
    assert selected is not None
    assert selected.params == {"cart_id": "lg_cart_9", "sku": "AC-CASE-6"}


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/checkouts/lg_chk_1/orders"),  # places an order
    ("GET", "/orders/lg_ord_1"),  # reads an order
    ("GET", "/healthz"),
    ("PUT", "/carts"),
    ("POST", "/carts/lg_cart_1/items/extra"),
    ("GET", "/carts/"),
])
def test_orders_and_other_routes_are_never_mirrored(method: str, path: str) -> None:
    assert select(ALL, "s", "u_1", method, path) is None


def test_order_placement_is_not_mirrored_even_if_a_config_lists_it() -> None:
    forced = ShadowConfig(basis_points=10_000,
                          routes=CART_BUILDING | {"POST /checkouts/{checkout_id}/orders"})
    assert select(forced, "s", "u_1", "POST", "/checkouts/lg_chk_1/orders") is None


@pytest.mark.parametrize("path", ["/carts/co_cart_1", "/carts/co_cart_1/items",
                                  "/carts/co_cart_1/checkout"])
def test_a_path_naming_a_core_id_is_never_mirrored(path: str) -> None:
    method = "GET" if path.count("/") == 2 else "POST"
    assert select(ALL, "s", "u_1", method, path) is None


def test_only_the_configured_routes_are_mirrored() -> None:
    config = ShadowConfig(basis_points=10_000, routes=frozenset({"POST /carts"}))
    assert select(config, "s", "u", "POST", "/carts") is not None
    assert select(config, "s", "u", "POST", "/carts/lg_1/items") is None


def test_no_config_or_a_zero_share_mirrors_nothing() -> None:
    assert select(None, "s", "u", "POST", "/carts") is None
    assert select(ShadowConfig(basis_points=0), "s", "u", "POST", "/carts") is None


def test_a_query_string_does_not_change_the_route() -> None:
    selected = select(ALL, "s", "u", "GET", "/carts/lg_1?expand=items")
    assert selected is not None and selected.params == {"cart_id": "lg_1"}


def test_the_share_is_deterministic_per_unit_and_close_to_the_percentage() -> None:
    config = ShadowConfig(basis_points=2500)
    chosen = [u for u in UNITS if select(config, "salt", u, "POST", "/carts") is not None]
    again = [u for u in UNITS if select(config, "salt", u, "POST", "/carts") is not None]
    assert chosen == again
    assert 0.22 < len(chosen) / len(UNITS) < 0.28
    # a unit is either in for every route or for none
    for unit in UNITS[:200]:
        verdicts = {select(config, "salt", unit, m, p) is not None
                    for m, p, _ in CART_BUILDING_REQUESTS}
        assert len(verdicts) == 1


def test_the_selection_uses_the_units_shadow_bucket() -> None:
    """The hot path inlines shadow_bucket (what `strangler explain` shows): they agree."""
    config = ShadowConfig(basis_points=4321)
    for unit in UNITS:
        selected = select(config, "salt", unit, "POST", "/carts") is not None
        assert selected is (shadow_bucket("salt", unit) < 4321)


def test_raising_the_share_keeps_every_unit_already_shadowed() -> None:
    low, high = ShadowConfig(basis_points=1000), ShadowConfig(basis_points=3000)
    in_low = {u for u in UNITS if select(low, "salt", u, "POST", "/carts")}
    in_high = {u for u in UNITS if select(high, "salt", u, "POST", "/carts")}
    assert in_low < in_high


def test_the_shadow_hash_is_independent_of_the_rollout_bucket() -> None:
    assert SHADOW_SEED != 0
    shadowed = {u for u in UNITS if shadow_bucket("salt", u) < 5000}
    in_core = {u for u in UNITS if bucket("salt", u) < 5000}
    both = len(shadowed & in_core) / len(UNITS)
    assert 0.21 < both < 0.29  # 25% when independent; 50% if the hashes were the same
    assert any(shadow_bucket("salt", u) != bucket("salt", u) for u in UNITS[:10])


RULES_WITH_A_SHADOWED_RULE = """\
schema: 1
funnels:
  - name: hw
    match: {header: hw}
    salt: h
    shadow: {share: 0}
    rules:
      - {id: ie, countries: [IE], percent: 0, shadow: {share: 100}}
"""


def test_select_request_uses_the_rule_of_the_country() -> None:
    rules = load_rules_text(RULES_WITH_A_SHADOWED_RULE, "1")
    funnel = rules.funnel("hw")
    assert select_request(funnel, "IE", "u", "POST", "/carts") is not None
    assert select_request(funnel, "DE", "u", "POST", "/carts") is None
    assert select_request(None, "IE", "u", "POST", "/carts") is None


@pytest.mark.parametrize(("backend", "reason", "mirrored"), [
    (Backend.LEGACY, Reason.RULE, True),
    (Backend.LEGACY, Reason.DEFAULT, True),
    (Backend.LEGACY, Reason.OWNER, True),
    (Backend.LEGACY, Reason.STICKY, True),
    (Backend.LEGACY, Reason.KILL_SWITCH, False),
    (Backend.LEGACY, Reason.FAILOVER, False),
    (Backend.LEGACY, Reason.ERROR, False),
    (Backend.CORE, Reason.RULE, False),
    (Backend.CORE, Reason.OWNER, False),
])
def test_only_legacy_served_requests_routed_without_trouble_are_mirrorable(
        backend: Backend, reason: Reason, mirrored: bool) -> None:
    assert mirrorable_decision(Decision(backend, reason, "1")) is mirrored


def test_match_route_knows_the_never_mirrored_routes() -> None:
    found = match_route("POST", "/checkouts/lg_chk_1/orders")
    assert found is not None
    route, params = found
    assert (route.name, route.mirrorable, params) == ("place_order", False,
                                                      {"checkout_id": "lg_chk_1"})


PATH_SHAPES = [
    "/carts", "/carts/", "/carts/lg_cart_1", "/carts//items", "/carts/lg_cart_1/items",
    "/carts/lg_cart_1/items/", "/carts/lg_cart_1/items/SKU-1", "/carts/lg_cart_1/checkout",
    "/carts/lg_cart_1/checkouts", "/carts/lg_cart_1/items/SKU-1/x", "/checkouts/c/orders",
    "/checkouts//orders", "/orders/o", "/orders/", "carts", "", "/", "//carts",
    "/carts/lg_cart_1/iteMs", "/CARTS",
]


def by_template(route: RouteTemplate, method: str, path: str) -> dict[str, str] | None:
    """The obvious definition: the method, then segment by segment, a literal equal and a
    parameter not empty."""
    want, got = route.template.split("/"), path.split("/")
    if method != route.method or len(want) != len(got):
        return None
    params: dict[str, str] = {}
    for w, g in zip(want, got, strict=True):
        if w.startswith("{"):
            if not g:
                return None
            params[w.strip("{}")] = g
        elif w != g:
            return None
    return params


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "DELETE", "PUT", "get"])
@pytest.mark.parametrize("path", PATH_SHAPES)
def test_the_route_index_matches_exactly_like_the_templates(method: str, path: str) -> None:
    """match_route (one split and one lookup, the hot path) finds what matching every
    template one by one finds."""
    found = next(((r, p) for r in ROUTES
                  if (p := by_template(r, method, path)) is not None), None)
    assert match_route(method, path) == found
    assert route_of(method, path) == (found[0] if found else None)


def test_route_request_is_the_selection_without_the_copies() -> None:
    funnel = load_rules_text(RULES_WITH_A_SHADOWED_RULE, "v1").funnel("hw")
    for country, unit, method, path in [("IE", "u", "POST", "/carts"),
                                        ("IE", "u", "PATCH", "/carts/lg_c/items/S-1?x=1"),
                                        ("DE", "u", "POST", "/carts"),
                                        ("IE", "u", "POST", "/checkouts/lg_c/orders")]:
        selected = select_request(funnel, country, unit, method, path)
        routed = route_request(funnel, country, unit, method, path)
        if selected is None:
            assert routed is None
        else:
            assert routed is not None
            assert selection(*routed, path) == selected
