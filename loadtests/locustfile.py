"""Checkout traffic through the proxy: carts, items, checkout and orders across funnels.

Each simulated customer keeps one session for its whole life (half of them through the
`checkout_session` cookie the proxy sets, half through an `X-Checkout-Session` header) and
runs checkouts one after the other: a cart in its country's currency (docs/contract.md),
one to three items of its funnel's skus, a checkout (sometimes with WELCOME10), an order
with an `Idempotency-Key`. About one order in ten pays with `tok_decline` (402 is then
expected, and the customer retries with `tok_visa` and a new key); a few replay their key
(the same response is expected). 402 from `tok_visa` is accepted too (the legacy stub
declines 2 % at random, as the contract allows); any other unexpected status, a missing
`X-Checkout-Backend`, or a checkout whose requests were served by two backends is a
failure.

Requests are named by route ("/carts/[id]/items") so the statistics stay readable. Every
finished checkout is also recorded as a "FLOW" entry named "<funnel> -> <backend>" (its
time is the whole checkout, cart to order), and a summary of the split per funnel, country
and backend, with the proxy's decision reasons, is printed when the test stops.

Headless, against `strangler up` (proxy on :8080):

    locust -f loadtests/locustfile.py --headless -u 50 -r 10 -t 60s --host http://127.0.0.1:8080

Add `--csv /tmp/locust` for CSV statistics; `--only-summary` for less output.
"""

from __future__ import annotations

import random
import secrets
import time
import uuid
from collections import Counter
from typing import Any

from locust import HttpUser, between, events, task

# funnel -> (weight, skus of the funnel)
FUNNELS: dict[str, tuple[int, tuple[str, ...]]] = {
    "hardware": (35, ("HW-LAPTOP-14", "HW-PHONE-6")),
    "accessories": (30, ("AC-CASE-6", "AC-CHARGER-65")),
    "warranties": (25, ("WR-CARE-2Y", "WR-CARE-3Y")),
    "subscriptions": (10, ("SB-CLOUD-1M",)),
}
# country -> (weight, currencies in order of likelihood); docs/contract.md's table
COUNTRIES: dict[str, tuple[int, tuple[str, ...]]] = {
    "DE": (18, ("EUR",)), "FR": (14, ("EUR",)), "GB": (14, ("GBP",)), "US": (14, ("USD",)),
    "IE": (10, ("EUR",)), "PT": (8, ("EUR",)), "FI": (7, ("EUR",)), "SE": (10, ("SEK", "EUR")),
    "NL": (5, ("EUR",)),
}
CITIES = {"DE": "Berlin", "FR": "Paris", "GB": "London", "US": "Austin", "IE": "Dublin",
          "PT": "Lisbon", "FI": "Helsinki", "SE": "Stockholm", "NL": "Utrecht"}
DECLINE_SHARE = 0.10  # orders paid with tok_decline first
REPLAY_SHARE = 0.05  # placed orders whose request is sent again with the same key
PROMO_SHARE = 0.20

# What this process saw; printed at test stop.
FLOWS: Counter[tuple[str, str, str]] = Counter()  # (funnel, country, backend) -> checkouts
REQUESTS: Counter[tuple[str, str]] = Counter()  # (funnel, backend) -> requests
REASONS: Counter[tuple[str, str]] = Counter()  # (backend, reason) -> requests
OUTCOMES: Counter[str] = Counter()


def _pick(table: dict[str, tuple[int, Any]]) -> str:
    names = list(table)
    return random.choices(names, weights=[table[n][0] for n in names])[0]


class FlowAborted(Exception):
    """A step failed (already reported as a failure): stop this checkout."""


class CheckoutCustomer(HttpUser):
    host = "http://127.0.0.1:8080"
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        self.use_header = random.random() < 0.5
        self.unit = "u_" + secrets.token_hex(12)  # the proxy's own unit format
        self.country = _pick(COUNTRIES)  # a customer shops from one country

    # -- one request ---------------------------------------------------------------------

    def call(self, method: str, path: str, name: str, expected: tuple[int, ...],
             flow: dict[str, Any], json_body: Any = None,
             headers: dict[str, str] | None = None) -> Any:
        sent = {"X-Checkout-Funnel": flow["funnel"], "X-Country": self.country}
        if self.use_header:
            sent["X-Checkout-Session"] = self.unit
        sent.update(headers or {})
        with self.client.request(method, path, name=name, json=json_body, headers=sent,
                                 catch_response=True) as response:
            backend = response.headers.get("X-Checkout-Backend")
            reason = response.headers.get("X-Checkout-Decision", "-").split(";", 1)[0]
            if backend:
                REQUESTS[(flow["funnel"], backend)] += 1
                REASONS[(backend, reason)] += 1
            if response.status_code not in expected:
                response.failure(f"{method} {name}: {response.status_code} (expected "
                                 f"{'/'.join(map(str, expected))}): {response.text[:200]}")
                raise FlowAborted()
            if not backend:
                response.failure(f"{method} {name}: no X-Checkout-Backend header")
                raise FlowAborted()
            first = flow.setdefault("backend", backend)
            if backend != first:
                response.failure(f"{method} {name}: served by {backend}, but this checkout "
                                 f"started on {first}")
                raise FlowAborted()
            response.success()
            return response

    # -- the funnel ----------------------------------------------------------------------

    @task
    def checkout(self) -> None:
        funnel = _pick(FUNNELS)
        flow: dict[str, Any] = {"funnel": funnel}
        started = time.perf_counter()
        try:
            order = self._checkout(flow)
        except FlowAborted:
            OUTCOMES["aborted"] += 1
            return
        backend = flow["backend"]
        FLOWS[(funnel, self.country, backend)] += 1
        OUTCOMES[order] += 1
        events.request.fire(
            request_type="FLOW", name=f"{funnel} -> {backend}",
            response_time=(time.perf_counter() - started) * 1000, response_length=0,
            exception=None, context={},
        )

    def _checkout(self, flow: dict[str, Any]) -> str:
        country = self.country
        currency = COUNTRIES[country][1][0 if random.random() < 0.8 else -1]
        cart = self.call("POST", "/carts", "/carts", (201,), flow,
                         {"country": country, "currency": currency}).json()
        if not self.use_header and "checkout_session" not in self.client.cookies:
            OUTCOMES["cookie-missing"] += 1  # the proxy should have set it by now
        cart_id = cart["id"]
        skus = FUNNELS[flow["funnel"]][1]
        for sku in random.sample(skus, k=random.randint(1, len(skus))):
            self.call("POST", f"/carts/{cart_id}/items", "/carts/[id]/items", (201,), flow,
                      {"sku": sku, "quantity": random.randint(1, 3)})
        body: dict[str, Any] = {
            "email": f"{self.unit}@shop.example",
            "shipping_address": {"name": "Load Test", "line1": "1 Main Street",
                                 "city": CITIES[country], "postal_code": "12345",
                                 "country": country},
        }
        if random.random() < PROMO_SHARE:
            body["promotion_code"] = "WELCOME10"
        checkout = self.call("POST", f"/carts/{cart_id}/checkout", "/carts/[id]/checkout",
                             (201,), flow, body).json()
        orders = f"/checkouts/{checkout['id']}/orders"
        if random.random() < DECLINE_SHARE:
            self._order(orders, "tok_decline", (402,), flow)
        status, order = self._order(orders, "tok_visa", (201, 402), flow)
        if status == 402:
            return "declined"  # the legacy stub's random declines (contract)
        self.call("GET", f"/orders/{order['id']}", "/orders/[id]", (200,), flow)
        return "placed"

    def _order(self, path: str, token: str, expected: tuple[int, ...],
               flow: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        key = str(uuid.uuid4())
        body = {"payment": {"method": "card", "token": token}}
        name = "/checkouts/[id]/orders"
        # 503 payment-unavailable (core only): retrying with the same key is safe.
        response = self.call("POST", path, name, (*expected, 503), flow, body,
                             {"Idempotency-Key": key})
        if response.status_code == 503:
            time.sleep(0.2)
            response = self.call("POST", path, name + " (retry)", expected, flow, body,
                                 {"Idempotency-Key": key})
        first = response.json()
        if response.status_code == 201 and random.random() < REPLAY_SHARE:
            replay = self.call("POST", path, name + " (replay)", (201,), flow, body,
                               {"Idempotency-Key": key})
            if replay.json().get("id") != first.get("id"):
                OUTCOMES["replay-mismatch"] += 1
        return response.status_code, first


@events.test_stop.add_listener
def print_split(environment: Any, **_: Any) -> None:
    if not FLOWS and not REQUESTS:
        return
    lines = ["", "Checkouts per funnel and backend (X-Checkout-Backend):",
             f"  {'funnel':<14}{'core':>8}{'legacy':>8}{'core %':>8}   requests core/legacy"]
    for funnel in FUNNELS:
        core = sum(n for (f, _, b), n in FLOWS.items() if f == funnel and b == "core")
        legacy = sum(n for (f, _, b), n in FLOWS.items() if f == funnel and b == "legacy")
        share = f"{100 * core / (core + legacy):.1f}" if core + legacy else "-"
        lines.append(f"  {funnel:<14}{core:>8}{legacy:>8}{share:>8}   "
                     f"{REQUESTS[(funnel, 'core')]}/{REQUESTS[(funnel, 'legacy')]}")
    lines.append("Checkouts per funnel and country (core/legacy):")
    for funnel in FUNNELS:
        cells = []
        for country in COUNTRIES:
            core, legacy = FLOWS[(funnel, country, "core")], FLOWS[(funnel, country, "legacy")]
            if core or legacy:
                cells.append(f"{country} {core}/{legacy}")
        lines.append(f"  {funnel:<14}{'  '.join(cells)}")
    lines.append("Requests per backend and decision reason: " + ", ".join(
        f"{b} {r}: {n}" for (b, r), n in sorted(REASONS.items())))
    lines.append("Checkout outcomes: " + ", ".join(
        f"{k}: {v}" for k, v in sorted(OUTCOMES.items())))
    print("\n".join(lines), flush=True)
