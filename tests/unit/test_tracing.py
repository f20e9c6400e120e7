"""The pure parts of the proxy's tracing (`proxy.tracing`): route templates, the decision
reasons as OpenTelemetry feature-flag reasons, the unit's digest. The extra is needed to
import the module: without it these skip (and fail under CI)."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from control.decision import Reason
from tests.support.ci import skip_or_fail

# feature_flag.result.reason values of the OpenTelemetry semantic conventions
SPEC_REASONS = {"static", "default", "targeting_match", "split", "cached", "disabled",
                "unknown", "stale", "error"}


@pytest.fixture
def tracing() -> ModuleType:
    try:
        ok = importlib.util.find_spec("opentelemetry.sdk.trace") is not None
    except ModuleNotFoundError:
        ok = False
    if not ok:
        skip_or_fail("the [otel] extra is not installed: pip install -e '.[otel]'")
    import proxy.tracing

    return proxy.tracing


def test_every_reason_maps_to_a_feature_flag_reason_of_the_spec(tracing: ModuleType) -> None:
    assert set(tracing.FLAG_REASONS) == set(Reason)
    assert set(tracing.FLAG_REASONS.values()) <= SPEC_REASONS


@pytest.mark.parametrize(("path", "route"), [
    ("/carts", "/carts"),
    ("/carts/co_1", "/carts/{cart_id}"),
    ("/carts/lg_1/items", "/carts/{cart_id}/items"),
    ("/carts/co_1/items/SKU-9", "/carts/{cart_id}/items/{sku}"),
    ("/carts/co_1/checkout", "/carts/{cart_id}/checkout"),
    ("/checkouts/co_1/orders", "/checkouts/{checkout_id}/orders"),
    ("/orders/co_1", "/orders/{order_id}"),
    ("/healthz", "/healthz"),
    ("//carts/x/../co_1", "/carts/{cart_id}"),  # judged normalised, as routed
    ("/warranties/carts/co_1", "/warranties/carts/{cart_id}"),  # a funnel's prefix
    ("/warranties/eu/orders/co_1", "/warranties/eu/orders/{order_id}"),  # the longest
    ("/warranties", None),
    ("/other/carts/co_1", None),  # not a funnel's prefix: no route, never the path
    ("/carts/", None),
    ("/carts/co_1/items/x/y", None),
    ("/metrics", None),
    ("/", None),
])
def test_routes_are_the_contracts_templates(
    tracing: ModuleType, path: str, route: str | None,
) -> None:
    assert tracing.route_template(path, ("/warranties/eu", "/warranties")) == route


@pytest.mark.parametrize(("value", "expected"), [
    ("proxy.example", ("proxy.example", None)),
    ("proxy.example:8080", ("proxy.example", 8080)),
    ("[::1]:8080", ("::1", 8080)),
    ("[::1]", ("::1", None)),
    ("::1", ("::1", None)),
])
def test_host_headers_give_server_address_and_port(
    tracing: ModuleType, value: str, expected: tuple[str, int | None],
) -> None:
    assert tracing._host_port(value) == expected


def test_the_context_id_is_a_digest_of_the_unit_never_the_unit(tracing: ModuleType) -> None:
    unit = "u_0123456789abcdef01234567"
    digest = tracing.unit_hash(unit)
    assert digest == tracing.unit_hash(unit) and len(digest) == 16
    assert unit not in digest and digest != tracing.unit_hash(unit + "x")
