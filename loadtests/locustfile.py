"""Checkout traffic through the proxy, as customers make it: every checkout a new customer.

Each iteration of a locust user is a **new customer**, a new unit to the proxy and its
guardrails: a fresh `X-Checkout-Session` (half the customers, like an app) or no session at
all, so that the proxy mints one and sets the `checkout_session` cookie (the other half,
like a browser; the cookie jar is emptied between customers). Nothing is reused, so the
guardrails, which count customers (conversion, sample ratio), see one unit per customer,
and a staged rollout can gather the customers its verdicts need.

A customer:
- comes from a country and shops one funnel. The funnel mix is `--funnel-mix` (default
  hardware 35, accessories 30, warranties 25, subscriptions 10); countries follow a base
  population table, and within a funnel the countries that its rules name (`--rules-file`,
  default rules/checkout.yaml: the pilots, and the countries being rolled out) are
  `--pilot-boost` times as likely (default 3), where the core is being tried;
- fills a cart in the country's currency (docs/contract.md) with one or more of the funnel's
  skus; 70 % of carts go on to a checkout (sometimes with WELCOME10), and 60 % of those
  checkouts pay;
- pays with `Idempotency-Key`: 8 % first use a card the backends always decline
  (`tok_decline`, 402), and half of those try another card (`tok_visa`, a new key), the
  others give up. `tok_visa` may be declined too (the legacy stub declines 2 % at random, as
  the contract allows): that customer gives up. A few placed orders are sent again with the
  same key (the same order must come back), and a placed order is read back.

Failure accounting is strict and honest: a 402 is an expected outcome (a decline), not a
failure, and so is the core's 503 `payment-unavailable`, retried once with the same key as
the contract says. Any other unexpected status, a missing `X-Checkout-Backend`, a replay that
returns another order, or a customer whose requests were served by two backends is a
failure. Think times are short (up to 0.2 s between steps, 0.1-0.5 s between customers), so
that 50 users make 1,400-1,800 customers a minute against `strangler up` (whose legacy stub
answers in 250-350 ms).

Requests are named by route ("/carts/[id]/items") so the statistics stay readable. Every
placed order is also recorded as a "FLOW" entry named "<funnel> -> <backend>" (its time is
the whole journey, cart to order), and a summary (customers per funnel, country and backend,
outcomes, conversion per funnel and backend, decision reasons) is printed when the test stops;
`--summary-json FILE` writes it as JSON too.

Headless, against `strangler up` (proxy on :8080):

    locust -f loadtests/locustfile.py --headless -u 50 -r 10 -t 60s --host http://127.0.0.1:8080

Add `--csv /tmp/locust` for CSV statistics; `--only-summary` for less output. A staged
rollout driven by this traffic: docs/cli.md, "A staged rollout under load".
"""

from __future__ import annotations

import json
import random
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from locust import HttpUser, between, events, task

REPO = Path(__file__).resolve().parent.parent

# funnel -> skus of the funnel (docs/contract.md's catalog)
SKUS: dict[str, tuple[str, ...]] = {
    "hardware": ("HW-LAPTOP-14", "HW-PHONE-6"),
    "accessories": ("AC-CASE-6", "AC-CHARGER-65"),
    "warranties": ("WR-CARE-2Y", "WR-CARE-3Y"),
    "subscriptions": ("SB-CLOUD-1M",),
}
DEFAULT_FUNNEL_MIX = "hardware=35,accessories=30,warranties=25,subscriptions=10"
# country -> (base weight, currencies in order of likelihood); docs/contract.md's table
COUNTRIES: dict[str, tuple[int, tuple[str, ...]]] = {
    "DE": (18, ("EUR",)), "FR": (14, ("EUR",)), "GB": (14, ("GBP",)), "US": (14, ("USD",)),
    "IE": (10, ("EUR",)), "PT": (8, ("EUR",)), "FI": (7, ("EUR",)), "SE": (10, ("SEK", "EUR")),
    "NL": (5, ("EUR",)),
}
CITIES = {"DE": "Berlin", "FR": "Paris", "GB": "London", "US": "Austin", "IE": "Dublin",
          "PT": "Lisbon", "FI": "Helsinki", "SE": "Stockholm", "NL": "Utrecht"}

START_CHECKOUT = 0.70  # carts that go on to a checkout
PAY = 0.60  # checkouts whose customer tries to pay
DECLINED_CARD = 0.08  # payers whose first card is always declined (tok_decline)
RETRY_AFTER_DECLINE = 0.5  # ... who then try another card; the others give up
REPLAY_SHARE = 0.05  # placed orders whose request is sent again with the same key
PROMO_SHARE = 0.20
THINK_SECONDS = 0.2  # at most, between two steps of one customer

# What this process saw; printed at test stop.
CUSTOMERS: Counter[tuple[str, str, str]] = Counter()  # (funnel, country, backend)
JOURNEYS: Counter[tuple[str, str, str]] = Counter()  # (funnel, backend, outcome) -> customers
REQUESTS: Counter[tuple[str, str]] = Counter()  # (funnel, backend) -> requests
REASONS: Counter[tuple[str, str]] = Counter()  # (backend, reason) -> requests
OUTCOMES: Counter[str] = Counter()

# Filled at init from the options (see `configure`).
MIX: dict[str, float] = {}
COUNTRY_WEIGHTS: dict[str, dict[str, float]] = {}


@events.init_command_line_parser.add_listener
def add_options(parser: Any, **_: Any) -> None:
    parser.add_argument("--funnel-mix", default=DEFAULT_FUNNEL_MIX, env_var="LOCUST_FUNNEL_MIX",
                        help="funnel=weight,... of the customers (a funnel left out gets none)")
    parser.add_argument("--rules-file", default=str(REPO / "rules" / "checkout.yaml"),
                        env_var="LOCUST_RULES_FILE",
                        help="the rules whose named countries are the funnels' pilots")
    parser.add_argument("--pilot-boost", type=float, default=3.0, env_var="LOCUST_PILOT_BOOST",
                        help="how much likelier a funnel's pilot countries are (1: not)")
    parser.add_argument("--summary-json", default="", env_var="LOCUST_SUMMARY_JSON",
                        help="also write the summary printed at stop to this file")


def parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        if name not in SKUS:
            raise ValueError(f"--funnel-mix: unknown funnel {name!r} (one of {', '.join(SKUS)})")
        mix[name] = float(weight or 1)
    if not mix or sum(mix.values()) <= 0:
        raise ValueError(f"--funnel-mix names no funnel with a weight: {text!r}")
    return mix


def pilot_countries(rules_file: str) -> dict[str, set[str]]:
    """funnel -> the countries its rules name explicitly (not '*')."""
    try:
        data = yaml.safe_load(Path(rules_file).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        print(f"locustfile: no pilot countries ({exc}); countries by population only")
        return {}
    named: dict[str, set[str]] = {}
    for funnel in data.get("funnels") or []:
        for rule in funnel.get("rules") or []:
            if isinstance(rule.get("countries"), list):
                named.setdefault(funnel.get("name"), set()).update(rule["countries"])
    return named


def country_weights(pilots: dict[str, set[str]], boost: float) -> dict[str, dict[str, float]]:
    return {funnel: {c: w * (boost if c in pilots.get(funnel, ()) else 1.0)
                     for c, (w, _) in COUNTRIES.items()}
            for funnel in SKUS}


@events.init.add_listener
def configure(environment: Any, **_: Any) -> None:
    options = environment.parsed_options
    mix = parse_mix(getattr(options, "funnel_mix", None) or DEFAULT_FUNNEL_MIX)
    rules_file = getattr(options, "rules_file", None) or str(REPO / "rules" / "checkout.yaml")
    boost = getattr(options, "pilot_boost", None)
    boost = 3.0 if boost is None else boost
    MIX.clear()
    MIX.update(mix)
    COUNTRY_WEIGHTS.clear()
    COUNTRY_WEIGHTS.update(country_weights(pilot_countries(rules_file), boost))


def _pick(weights: dict[str, float]) -> str:
    names = list(weights)
    return random.choices(names, weights=[weights[n] for n in names])[0]


class JourneyAborted(Exception):
    """A step failed (already reported as a failure): this customer stops."""


class CheckoutCustomer(HttpUser):
    host = "http://127.0.0.1:8080"
    wait_time = between(0.1, 0.5)

    # -- one request ---------------------------------------------------------------------

    def call(self, method: str, path: str, name: str, expected: tuple[int, ...],
             c: dict[str, Any], json_body: Any = None,
             headers: dict[str, str] | None = None,
             check: Callable[[Any], str | None] | None = None) -> Any:
        sent = {"X-Checkout-Funnel": c["funnel"], "X-Country": c["country"]}
        if c["unit"] is not None:
            sent["X-Checkout-Session"] = c["unit"]
        sent.update(headers or {})
        with self.client.request(method, path, name=name, json=json_body, headers=sent,
                                 catch_response=True) as response:
            backend = response.headers.get("X-Checkout-Backend")
            reason = response.headers.get("X-Checkout-Decision", "-").split(";", 1)[0]
            if backend:
                REQUESTS[(c["funnel"], backend)] += 1
                REASONS[(backend, reason)] += 1
            if response.status_code not in expected:
                response.failure(f"{method} {name}: {response.status_code} (expected "
                                 f"{'/'.join(map(str, expected))}): {response.text[:200]}")
                raise JourneyAborted()
            if not backend:
                response.failure(f"{method} {name}: no X-Checkout-Backend header")
                raise JourneyAborted()
            first = c.setdefault("backend", backend)
            if backend != first:
                response.failure(f"{method} {name}: served by {backend}, but this customer "
                                 f"started on {first}")
                raise JourneyAborted()
            problem = check(response) if check is not None else None
            if problem:
                response.failure(f"{method} {name}: {problem}")
                raise JourneyAborted()
            response.success()
            return response

    def think(self) -> None:
        time.sleep(random.uniform(0, THINK_SECONDS))  # gevent's sleep under locust

    # -- one customer --------------------------------------------------------------------

    @task
    def customer(self) -> None:
        funnel = _pick(MIX)
        country = _pick(COUNTRY_WEIGHTS[funnel])
        self.client.cookies.clear()  # a new customer: no session from the previous one
        c: dict[str, Any] = {
            "funnel": funnel, "country": country,
            # an app names its own session; a browser gets the proxy's cookie
            "unit": "u_" + secrets.token_hex(12) if random.random() < 0.5 else None,
        }
        started = time.perf_counter()
        try:
            outcome = self.journey(c)
        except JourneyAborted:
            OUTCOMES["aborted (failure)"] += 1
            return
        backend = c["backend"]
        CUSTOMERS[(funnel, country, backend)] += 1
        OUTCOMES[outcome] += 1
        JOURNEYS[(funnel, backend, outcome)] += 1
        if outcome.startswith("placed"):
            events.request.fire(
                request_type="FLOW", name=f"{funnel} -> {backend}",
                response_time=(time.perf_counter() - started) * 1000, response_length=0,
                exception=None, context={},
            )

    def journey(self, c: dict[str, Any]) -> str:
        country = c["country"]
        currency = COUNTRIES[country][1][0 if random.random() < 0.8 else -1]
        cart = self.call("POST", "/carts", "/carts", (201,), c,
                         {"country": country, "currency": currency}).json()
        if c["unit"] is None and "checkout_session" not in self.client.cookies:
            OUTCOMES["cookie-missing"] += 1  # the proxy should have set it by now
        cart_id = cart["id"]
        skus = SKUS[c["funnel"]]
        for sku in random.sample(skus, k=random.randint(1, len(skus))):
            self.think()
            self.call("POST", f"/carts/{cart_id}/items", "/carts/[id]/items", (201,), c,
                      {"sku": sku, "quantity": random.randint(1, 3)})
        if random.random() >= START_CHECKOUT:
            return "left the cart"
        self.think()
        body: dict[str, Any] = {
            "email": f"{c['unit'] or secrets.token_hex(6)}@shop.example",
            "shipping_address": {"name": "Load Test", "line1": "1 Main Street",
                                 "city": CITIES[country], "postal_code": "12345",
                                 "country": country},
        }
        if random.random() < PROMO_SHARE:
            body["promotion_code"] = "WELCOME10"
        checkout = self.call("POST", f"/carts/{cart_id}/checkout", "/carts/[id]/checkout",
                             (201,), c, body).json()
        if random.random() >= PAY:
            return "left the checkout"
        self.think()
        orders = f"/checkouts/{checkout['id']}/orders"
        retried = False
        if random.random() < DECLINED_CARD:
            self.order(orders, "tok_decline", (402,), c)
            if random.random() >= RETRY_AFTER_DECLINE:
                return "declined, gave up"
            retried = True
            self.think()
        status, order = self.order(orders, "tok_visa", (201, 402), c)
        if status == 402:
            return "declined at random"  # the legacy stub's random declines (contract)
        self.call("GET", f"/orders/{order['id']}", "/orders/[id]", (200,), c)
        return "placed after a decline" if retried else "placed"

    def order(self, path: str, token: str, expected: tuple[int, ...],
              c: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        key = str(uuid.uuid4())
        body = {"payment": {"method": "card", "token": token}}
        name = "/checkouts/[id]/orders"
        # 503 payment-unavailable (core only): retrying with the same key is safe.
        response = self.call("POST", path, name, (*expected, 503), c, body,
                             {"Idempotency-Key": key})
        if response.status_code == 503:
            time.sleep(0.2)
            response = self.call("POST", path, name + " (retry)", expected, c, body,
                                 {"Idempotency-Key": key})
        first = response.json()
        if response.status_code == 201 and random.random() < REPLAY_SHARE:
            self.call("POST", path, name + " (replay)", (201,), c, body,
                      {"Idempotency-Key": key},
                      check=lambda r: None if r.json().get("id") == first.get("id") else
                      f"the replay returned order {r.json().get('id')}, not {first.get('id')}")
        return response.status_code, first


# -- the summary --------------------------------------------------------------------------

STARTED = ("left the checkout", "declined, gave up", "declined at random", "placed",
           "placed after a decline")  # outcomes of customers who started a checkout


def conversion(funnel: str, backend: str) -> dict[str, Any]:
    """Customers who placed an order among those who started a checkout (as the
    conversion guardrail counts them, on this side of the proxy)."""
    started = sum(JOURNEYS[(funnel, backend, o)] for o in STARTED)
    placed = sum(JOURNEYS[(funnel, backend, o)] for o in ("placed", "placed after a decline"))
    return {"checkouts_started": started, "orders_placed": placed,
            "rate": round(placed / started, 4) if started else None}


def summary() -> dict[str, Any]:
    per_funnel = {}
    for funnel in SKUS:
        core = sum(n for (f, _, b), n in CUSTOMERS.items() if f == funnel and b == "core")
        legacy = sum(n for (f, _, b), n in CUSTOMERS.items() if f == funnel and b == "legacy")
        per_funnel[funnel] = {
            "customers": {"core": core, "legacy": legacy},
            "requests": {"core": REQUESTS[(funnel, "core")],
                         "legacy": REQUESTS[(funnel, "legacy")]},
            "conversion": {b: conversion(funnel, b) for b in ("core", "legacy")},
            "countries": {country: {"core": CUSTOMERS[(funnel, country, "core")],
                                    "legacy": CUSTOMERS[(funnel, country, "legacy")]}
                          for country in COUNTRIES
                          if CUSTOMERS[(funnel, country, "core")]
                          or CUSTOMERS[(funnel, country, "legacy")]},
        }
    return {"customers": sum(CUSTOMERS.values()), "funnels": per_funnel,
            "outcomes": dict(OUTCOMES),
            "reasons": {f"{b} {r}": n for (b, r), n in sorted(REASONS.items())}}


@events.test_stop.add_listener
def print_summary(environment: Any, **_: Any) -> None:
    if not CUSTOMERS and not REQUESTS:
        return
    data = summary()
    lines = ["", f"Customers (each a new unit): {data['customers']}",
             f"  {'funnel':<14}{'core':>8}{'legacy':>8}{'core %':>8}   requests core/legacy"]
    for funnel, f in data["funnels"].items():
        core, legacy = f["customers"]["core"], f["customers"]["legacy"]
        share = f"{100 * core / (core + legacy):.1f}" if core + legacy else "-"
        lines.append(f"  {funnel:<14}{core:>8}{legacy:>8}{share:>8}   "
                     f"{f['requests']['core']}/{f['requests']['legacy']}")
    lines.append("Customers per funnel and country (core/legacy):")
    for funnel, f in data["funnels"].items():
        cells = [f"{country} {n['core']}/{n['legacy']}" for country, n in f["countries"].items()]
        lines.append(f"  {funnel:<14}{'  '.join(cells)}")
    lines.append("Conversion (orders placed / checkouts started), core vs legacy:")
    for funnel, f in data["funnels"].items():
        cells = [f"{c['orders_placed']}/{c['checkouts_started']}"
                 + (f" = {c['rate']:.1%}" if c["rate"] is not None else "")
                 for c in f["conversion"].values()]
        if any(c["checkouts_started"] for c in f["conversion"].values()):
            lines.append(f"  {funnel:<14}{cells[0]:<22}{cells[1]}")
    lines.append("Requests per backend and decision reason: " + ", ".join(
        f"{k}: {v}" for k, v in data["reasons"].items()))
    lines.append("Customer outcomes: " + ", ".join(
        f"{k}: {v}" for k, v in sorted(data["outcomes"].items())))
    print("\n".join(lines), flush=True)
    path = getattr(environment.parsed_options, "summary_json", "") \
        if environment.parsed_options else ""
    if path:
        Path(path).write_text(json.dumps(data, indent=2))
