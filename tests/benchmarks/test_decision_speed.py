"""Microbenchmark: context extraction plus the routing decision, on a large rule set.

The rule set is generated: 50 funnels x 30 countries (one rule per country, quoted because YAML reads NO as false, then a '*'
rule: 1,550 rules), loaded with `control.rules_loader.load_rules_text` like a real file. The
requests carry realistic browser headers (cookies, tracing, forwarding, ...), across
funnels (by header and by path prefix), countries, cookie and header sessions, minted
units and contract paths naming an id.

It asserts no time (machines are noisy): it prints microseconds per decision and stores
them in the benchmark's `extra_info`. In the normal test run the rounds are few, so it
takes well under a second. For stable figures:

    DECISION_BENCH_ROUNDS=300 pytest tests/benchmarks --benchmark-only \
        --benchmark-columns=min,median,mean,stddev,rounds -p no:cacheprovider

(`--benchmark-json FILE` keeps them; `--benchmark-compare` compares with a saved run.)
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from control.decision import RequestContext, decide
from control.rules import RuleSet
from control.rules_loader import load_rules_text
from proxy.context import extract_context

FUNNELS = 50
COUNTRIES = (
    "IE", "PT", "FI", "SE", "DE", "FR", "NL", "BE", "LU", "AT", "IT", "ES", "DK", "NO", "PL",
    "CZ", "SK", "HU", "RO", "BG", "GR", "HR", "SI", "EE", "LV", "LT", "GB", "US", "CA", "AU",
)
BATCH = 1024
ROUNDS = int(os.environ.get("DECISION_BENCH_ROUNDS", "15"))
SIGNALS = """\
    signals:
      checkout_started: {method: POST, path: '^/carts/[^/]+/checkout$', status: [201]}
      order_placed: {method: POST, path: '^/checkouts/[^/]+/orders$', status: [201]}
      payment_declined: {method: POST, path: '^/checkouts/[^/]+/orders$', status: [402]}
"""


def large_rules_yaml(funnels: int = FUNNELS, countries: tuple[str, ...] = COUNTRIES) -> str:
    rng = random.Random(7)
    out = ["schema: 1", "stickiness: {idle_ttl_seconds: 3600}", "funnels:"]
    for i in range(funnels):
        out.append(f"  - name: funnel-{i:02d}")
        out.append(f"    match: {{header: funnel-{i:02d}, path_prefix: /f{i:02d}}}")
        out.append(f"    salt: funnel-{i:02d}-2026-11")
        out.append(SIGNALS.rstrip("\n"))
        out.append("    rules:")
        for country in countries:
            percent = rng.choice(("0", "0.01", "0.5", "5", "12.34", "50", "100"))
            out.append(f"      - {{id: f{i:02d}-{country.lower()}, countries: ['{country}'], "
                       f"percent: {percent}}}")
        out.append(f"      - {{id: f{i:02d}-rest, countries: '*', percent: 1}}")
    return "\n".join(out) + "\n"


Headers = list[tuple[bytes, bytes]]


def browser_headers(rng: random.Random, extra: Headers, cookie_unit: str | None) -> Headers:
    cookies = [b"_ga=GA1.2.1234567890.1700000000", b"consent=necessary%2Canalytics",
               b"locale=en-IE"]
    if cookie_unit is not None:
        cookies.insert(rng.randrange(len(cookies) + 1),
                       b"checkout_session=" + cookie_unit.encode())
    return [
        (b"host", b"shop.example"),
        (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Firefox/132.0"),
        (b"accept", b"application/json"),
        (b"accept-language", b"en-IE,en;q=0.8"),
        (b"accept-encoding", b"gzip, deflate, br"),
        (b"content-type", b"application/json"),
        (b"content-length", b"42"),
        (b"x-forwarded-for", b"203.0.113.7"),
        (b"x-request-id", b"8d1f5c2e-6a3b-4f0e-9c7d-1b2a3c4d5e6f"),
        (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        *extra,
        (b"cookie", b"; ".join(cookies)),
        (b"origin", b"https://shop.example"),
        (b"referer", b"https://shop.example/cart"),
    ]


def request_mix(n: int = BATCH, seed: int = 11) -> list[tuple[str, Headers]]:
    """A realistic spread: most requests name their funnel by header, some by path; most
    carry a session (cookie or header); some are new visitors; some name a contract id."""
    rng = random.Random(seed)
    requests = []
    for k in range(n):
        funnel = rng.randrange(FUNNELS)
        country = rng.choice(COUNTRIES).encode()
        unit = f"u_{rng.getrandbits(96):024x}"
        kind = rng.random()
        extra: Headers = [(b"cf-ipcountry", country)] if k % 3 else [(b"x-country", country)]
        cookie_unit: str | None = unit
        if kind < 0.2:
            extra.append((b"x-checkout-session", unit.encode()))
            cookie_unit = None
        elif kind < 0.3:
            cookie_unit = None  # a new visitor: a unit is minted
        path = rng.choice(("/carts", "/carts", "/offers",
                           f"/carts/co_cart_{k:08x}/items", f"/checkouts/lg_chk_{k:08x}/orders"))
        if rng.random() < 0.8:
            extra.append((b"x-checkout-funnel", f"funnel-{funnel:02d}".encode()))
        else:
            path = f"/f{funnel:02d}{path}"
        requests.append((path, browser_headers(rng, extra, cookie_unit)))
    return requests


def worst_case() -> tuple[str, Headers]:
    """Last funnel by path prefix (header lookup misses), last country of its rule list,
    the country in the last country header, the session cookie last in a long cookie."""
    rng = random.Random(3)
    headers = browser_headers(rng, [(b"cf-ipcountry", COUNTRIES[-1].encode())], None)
    headers.append((b"cookie", b"a=1; b=2; c=3; d=4; checkout_session=u_"
                    + b"0123456789abcdef01234567"))
    return f"/f{FUNNELS - 1:02d}/offers", headers


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    ruleset = load_rules_text(large_rules_yaml(), "bench")
    assert len(ruleset.funnels) == FUNNELS
    assert sum(len(f.rules) for f in ruleset.funnels) == FUNNELS * (len(COUNTRIES) + 1)
    return ruleset


def _report(benchmark: Any, capsys: pytest.CaptureFixture[str], label: str,
            per_call: int, fallback: Callable[[], float]) -> None:
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    median = stats.median if stats is not None else fallback()
    fastest = stats.min if stats is not None else median
    us, us_min = median / per_call * 1e6, fastest / per_call * 1e6
    benchmark.extra_info["us_per_decision"] = round(us, 3)
    benchmark.extra_info["us_per_decision_min"] = round(us_min, 3)
    with capsys.disabled():  # the min is the figure to trust on a busy machine
        print(f"\n  {label}: {us:.2f} us per decision, median of {ROUNDS} rounds of "
              f"{per_call} (fastest round {us_min:.2f} us)", end="")


def _time_once(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def test_extract_and_decide_request_mix(benchmark: Any, rules: RuleSet,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    requests = request_mix()
    kills: frozenset[str] = frozenset()

    def run() -> None:
        for path, headers in requests:
            decide(extract_context(rules, path, headers), rules, kills, None)

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    _report(benchmark, capsys, "extract_context + decide, request mix", len(requests),
            lambda: _time_once(run))
    # The mix exercised what it claims to: every funnel, by header and by prefix.
    contexts = [extract_context(rules, p, h) for p, h in requests]
    assert all(c.funnel is not None for c in contexts)
    assert any(c.unit_minted for c in contexts) and any(c.entity_id for c in contexts)


def test_extract_and_decide_worst_case(benchmark: Any, rules: RuleSet,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path, headers = worst_case()
    kills: frozenset[str] = frozenset()
    ctx = extract_context(rules, path, headers)
    assert ctx.funnel is not None and ctx.funnel.name == f"funnel-{FUNNELS - 1:02d}"
    assert decide(ctx, rules, kills).rule_id == f"f{FUNNELS - 1:02d}-{COUNTRIES[-1].lower()}"

    def run() -> None:
        for _ in range(BATCH):
            decide(extract_context(rules, path, headers), rules, kills, None)

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    _report(benchmark, capsys, "extract_context + decide, worst case", BATCH,
            lambda: _time_once(run))


def test_decide_only(benchmark: Any, rules: RuleSet,
                     capsys: pytest.CaptureFixture[str]) -> None:
    contexts: list[RequestContext] = [extract_context(rules, p, h) for p, h in request_mix()]
    kills: frozenset[str] = frozenset({"funnel-00"})

    def run() -> None:
        for ctx in contexts:
            decide(ctx, rules, kills, None)

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    _report(benchmark, capsys, "decide alone (bucket hash included)", len(contexts),
            lambda: _time_once(run))
