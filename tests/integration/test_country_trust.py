"""Country headers are believed only as configured, only ISO 3166-1 codes count, and the
country an outcome carries is one the rules name (else "other"): what clients send can
neither pick their rule nor grow the telemetry."""

from __future__ import annotations

import itertools
import string
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

TRUSTED_PEER = "127.0.0.2"


def post_cart(stack: Any, country: str, source: str = "127.0.0.1") -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=stack.url, transport=transport, timeout=10) as client:
        return client.post("/carts", headers={
            "X-Checkout-Funnel": "warranties", "X-Country": country,
            "X-Checkout-Session": f"unit-{uuid.uuid4().hex}"})


def recorded_countries(stack: Any, expected_requests: int) -> dict[str, int]:
    """Country -> requests in the warranties funnel's telemetry, once all were flushed."""
    deadline = time.monotonic() + 15
    while True:
        now = time.time()
        per_country = stack.app.rt.telemetry.countries("warranties", now - 120, now + 1)
        counts = {c: sum(s.requests for s in arms.values()) for c, arms in per_country.items()}
        if sum(counts.values()) >= expected_requests:
            return counts
        assert time.monotonic() < deadline, f"telemetry holds {counts}"
        time.sleep(0.1)


def test_by_default_a_clients_country_header_is_ignored(make_stack: Any) -> None:
    """Before: any client could pick its rule (IE: 100 % core) with one header."""
    stack = make_stack(trust_country_headers="trusted-proxies")
    r = post_cart(stack, "IE")
    assert r.headers["x-checkout-decision"].startswith("RULE; rule=rest-half;")


def test_a_trusted_proxys_country_header_routes(make_stack: Any) -> None:
    stack = make_stack(trust_country_headers="trusted-proxies",
                       trusted_proxies=[f"{TRUSTED_PEER}/32"])
    trusted = post_cart(stack, "IE", source=TRUSTED_PEER)
    assert trusted.headers["x-checkout-decision"].startswith("RULE; rule=ie-all;")
    assert trusted.headers["x-checkout-backend"] == "core"
    untrusted = post_cart(stack, "IE", source="127.0.0.1")
    assert untrusted.headers["x-checkout-decision"].startswith("RULE; rule=rest-half;")


def test_behind_a_cdn_every_clients_country_header_routes(make_stack: Any) -> None:
    stack = make_stack(trust_country_headers="always")
    r = post_cart(stack, "IE")
    assert r.headers["x-checkout-decision"].startswith("RULE; rule=ie-all;")


def test_every_two_letter_code_leaves_only_the_rules_countries_in_the_telemetry(
    make_stack: Any,
) -> None:
    """Before: the 676 codes became 676 telemetry keys (QQ, ZZ... as countries), each one
    more per bucket, funnel and arm, for as long as the telemetry keeps them."""
    stack = make_stack(trust_country_headers="always")
    codes = ["".join(p) for p in itertools.product(string.ascii_uppercase, repeat=2)]
    with httpx.Client(base_url=stack.url, timeout=10) as client, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda code: client.post("/carts", headers={
            "X-Checkout-Funnel": "warranties", "X-Country": code}).status_code, codes))
    assert set(answers) == {201}
    counts = recorded_countries(stack, len(codes))
    assert set(counts) == {"IE", "DE", "other", "-"}  # the rules name IE and DE
    assert counts["IE"] == counts["DE"] == 1
    assert counts["-"] > 400  # not countries (QQ, ZZ...): 676 - 249 ISO codes
    assert sum(counts.values()) == len(codes)
