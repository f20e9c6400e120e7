from __future__ import annotations

import pytest

from control.rules_loader import load_rules_text
from proxy.context import (
    entity_id,
    extract_context,
    forward_path,
    normalize_path,
    quote_path,
    unit_of,
)

RULES = load_rules_text("""\
context:
  country_headers: [X-Country, CF-IPCountry]
funnels:
  - name: warranties
    match: {header: Warranties, path_prefix: /warranties}
    salt: w
  - name: deep
    match: {path_prefix: /warranties/deep, strip_prefix: false}
    salt: d
""", "1")


@pytest.mark.parametrize(("raw", "normal"), [
    ("/carts", "/carts"),
    ("//carts", "/carts"),
    ("/a//b", "/a/b"),
    ("/warranties/../hardware/carts", "/hardware/carts"),
    ("/../../etc", "/etc"),
    ("/carts/./x/", "/carts/x/"),
    ("carts", "/carts"),
])
def test_paths_are_normalised_once_for_matching_and_forwarding(raw, normal):
    assert normalize_path(raw) == normal


def test_quote_path_keeps_slashes_and_escapes_the_rest():
    assert quote_path("/carts/a b/ü") == "/carts/a%20b/%C3%BC"


@pytest.mark.parametrize(("path", "headers", "funnel", "upstream"), [
    ("/carts", [(b"x-checkout-funnel", b"warranties")], "warranties", "/carts"),
    ("/carts", [(b"x-checkout-funnel", b" WARRANTIES ")], "warranties", "/carts"),
    ("/warranties/carts/1", [], "warranties", "/carts/1"),
    ("/warranties", [], "warranties", "/"),
    ("/warrantiesx/carts", [], None, "/warrantiesx/carts"),
    ("/warranties/deep/carts", [], "deep", "/warranties/deep/carts"),
    ("/hardware/../warranties/carts", [], "warranties", "/carts"),
    ("//warranties//carts", [], "warranties", "/carts"),
    ("/carts", [(b"x-checkout-funnel", b"nope")], None, "/carts"),
])
def test_funnel_by_header_or_longest_path_prefix(path, headers, funnel, upstream):
    ctx = extract_context(RULES, path, headers)
    assert (ctx.funnel.name if ctx.funnel else None) == funnel
    assert ctx.path == upstream


@pytest.mark.parametrize(("headers", "country"), [
    ([(b"x-country", b"ie")], "IE"),
    ([(b"cf-ipcountry", b"DE")], "DE"),
    ([(b"x-country", b"FR"), (b"cf-ipcountry", b"DE")], "FR"),
    ([(b"x-country", b"XYZ")], None),
    ([(b"x-country", b"1A")], None),
    ([(b"x-country", b"QQ")], None),  # two letters, but no ISO 3166-1 country
    ([(b"x-country", b"XX"), (b"cf-ipcountry", b"PT")], "PT"),  # Cloudflare's "unknown"
    ([(b"x-country", b" se ")], "SE"),
    ([], None),
])
def test_country_from_the_first_configured_header(headers, country):
    assert extract_context(RULES, "/carts", headers).country == country


def test_country_headers_of_an_untrusted_peer_are_ignored():
    ctx = extract_context(RULES, "/carts", [(b"x-country", b"IE")], country_trusted=False)
    assert ctx.country is None


@pytest.mark.parametrize(("raw", "upstream", "forwarded"), [
    (b"/carts/%ff", "/carts/\ufffd", "/carts/%ff"),  # the client's bytes, not U+FFFD
    (b"/carts/%c0%ae", "/carts/\ufffd\ufffd", "/carts/%c0%ae"),
    (b"/carts/a%20b", "/carts/a b", "/carts/a%20b"),
    (b"/warranties/carts/%41", "/carts/A", "/carts/%41"),  # the funnel prefix stripped
    (b"/warranties/%ff", "/\ufffd", "/%ff"),
    (b"/warranties", "/", "/"),
    (b"/warr%61nties/carts/%41", "/carts/A", "/carts/A"),  # prefix spelled with escapes
    (b"/carts/co_1%2F..%2Flg_2", "/carts/lg_2", "/carts/lg_2"),  # %2F: normalised
    (b"/carts/%2e%2e/x", "/x", "/x"),  # encoded dot segments: normalised
    (b"//carts/%41", "/carts/A", "/carts/A"),
    (b"/carts/%zz", "/carts/%zz", "/carts/%25zz"),  # not an escape: re-encoded
    (b"/carts/x", "/carts/x", "/carts/x"),
    (None, "/carts/a b", "/carts/a%20b"),
])
def test_the_forwarded_path_is_the_clients_when_it_spells_the_routed_one(raw, upstream,
                                                                          forwarded):
    from urllib.parse import unquote

    path = unquote(raw.decode()) if raw else upstream
    assert forward_path(raw, path, upstream) == forwarded
    assert unquote(forwarded) == upstream


def test_unit_from_header_then_cookie_else_minted():
    by_header = [(b"x-checkout-session", b"sess-header-1"),
                 (b"cookie", b"checkout_session=sess-cookie-1")]
    assert unit_of(RULES, by_header) == "sess-header-1"
    by_cookie = [(b"cookie", b"a=b; checkout_session=sess-cookie-1; c=d")]
    assert unit_of(RULES, by_cookie) == "sess-cookie-1"
    ctx = extract_context(RULES, "/carts", [])
    assert ctx.unit_minted and ctx.unit.startswith("u_")
    assert extract_context(RULES, "/carts", []).unit != ctx.unit


@pytest.mark.parametrize("bad", [b"short", b"x" * 200, b"has space 123", b"semi;colon1234"])
def test_malformed_units_are_replaced_by_a_minted_one(bad):
    ctx = extract_context(RULES, "/carts", [(b"x-checkout-session", bad)])
    assert ctx.unit_minted


@pytest.mark.parametrize(("path", "entity"), [
    ("/carts", None), ("/carts/", None), ("/carts/co_cart_1", "co_cart_1"),
    ("/carts/co_cart_1/items/SKU", "co_cart_1"), ("/checkouts/lg_chk_2/orders", "lg_chk_2"),
    ("/orders/co_ord_3", "co_ord_3"), ("/healthz", None), ("/products/co_x", None),
])
def test_entity_id_from_contract_paths(path, entity):
    assert entity_id(path) == entity
