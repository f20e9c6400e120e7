"""Chaos: the whole stack under load while processes die, then every order placed must have
reached the downstream order system exactly once.

Stack: `strangler serve` (process) -> the checkout core (process, its relay and order-sync
consumer inside, SQLite) and the legacy stub; the downstream order system is the core's fake
(records each idempotency key once, counts deliveries); the fake payment gateway keeps its
ledger in a SQLite file of its own that every life of the core shares, like a provider. Customers run whole checkouts
through the proxy from several threads and retry what failed, orders with the same
Idempotency-Key.

The schedule (order shuffled by a seeded RNG; the seed is printed) kills:
- the core between payment and commit (crash point `after_payment`),
- the core between commit and event publication (crash point `after_commit`),
- the core while its consumer is mid-batch (a downstream push held open, then SIGKILL),
- the core at a random moment (SIGKILL),
- the proxy (SIGKILL), restarted on the same port.
Crash points come from tests/support/crashing_core.py (the core has no hook of its own).
Afterwards the gateway's ledger must hold exactly one authorization per order, and the
payment charged before the `after_payment` crash must have been found again by its key,
never authorized a second time.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from checkout_core import downstream_fake
from tests.support.processes import (
    Process,
    ProxyProcess,
    backend_process,
    strangler_serve,
    wait_until,
)
from tests.support.servers import reserved_port, serve

pytestmark = pytest.mark.e2e

RULES = """\
schema: 1
funnels:
  - name: warranties
    match: {header: warranties}
    salt: chaos
    signals:
      order_placed: {method: POST, path: '^/checkouts/[^/]+/orders$', status: [201]}
    rules:
      - {id: ie-core, countries: [IE], percent: 100}
      - {id: de-legacy, countries: [DE], percent: 0}
"""
CORE_ENV = {
    "CHECKOUT_CORE_GATEWAY_LATENCY_MS": "2",
    "CHECKOUT_CORE_DB_SYNCHRONOUS": "NORMAL",
    "CHECKOUT_CORE_IDEMPOTENCY_LEASE_SECONDS": "1",
    "CHECKOUT_CORE_IDEMPOTENCY_WAIT_SECONDS": "2",
    "CHECKOUT_CORE_CONSUMER_CLAIM_IDLE_MS": "300",
    "CHECKOUT_CORE_CONSUMER_BLOCK_MS": "50",
    "CHECKOUT_CORE_CONSUMER_BACKOFF_BASE_MS": "20",
    "CHECKOUT_CORE_CONSUMER_BACKOFF_MAX_MS": "100",
    "CHECKOUT_CORE_CONSUMER_MAX_DELIVERIES": "50",
    "CHECKOUT_CORE_RELAY_POLL_MS": "50",
    "CHECKOUT_CORE_DOWNSTREAM_TIMEOUT_MS": "30000",
}
ADDRESS = {"name": "Chaos", "line1": "1 Main St", "city": "Cork", "postal_code": "T12",
           "country": "IE"}
RETRY_STATUS = {502, 503, 504}
RETRY_SLUGS = ("idempotency-request-in-progress", "checkout-payment-in-progress")


# -- customers ------------------------------------------------------------------------------

@dataclass
class Ledger:
    """What the customers saw: order attempts by checkout, and the 201s."""

    attempts: dict[str, str] = field(default_factory=dict)  # checkout id -> idempotency key
    placed: dict[str, str] = field(default_factory=dict)  # checkout id -> order id
    failovers: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def retrying(client: httpx.Client, method: str, path: str, until: float,
             **kwargs: Any) -> httpx.Response | None:
    """The request, retried while the stack is down or busy; None if it never settled."""
    while time.monotonic() < until:
        try:
            r = client.request(method, path, **kwargs)
        except httpx.TransportError:
            time.sleep(0.05)
            continue
        busy = r.status_code == 409 and r.headers.get("content-type", "").startswith(
            "application/problem") and r.json().get("type", "").endswith(RETRY_SLUGS)
        if r.status_code in RETRY_STATUS or busy:
            time.sleep(0.05)
            continue
        return r
    return None


def checkout_flow(client: httpx.Client, ledger: Ledger, country: str, until: float) -> None:
    headers = {"X-Checkout-Funnel": "warranties", "X-Country": country,
               "X-Checkout-Session": f"chaos-{uuid.uuid4().hex}"}
    currency = {"currency": "EUR", "country": country}
    cart = retrying(client, "POST", "/carts", until, headers=headers, json=currency)
    if cart is None or cart.status_code != 201:
        return
    if cart.headers["x-checkout-decision"].startswith("FAILOVER"):
        with ledger.lock:
            ledger.failovers += 1
    cart_id = cart.json()["id"]
    item = retrying(client, "POST", f"/carts/{cart_id}/items", until, headers=headers,
                    json={"sku": "WR-CARE-2Y", "quantity": 1})
    if item is None or item.status_code != 201:
        return
    started = retrying(client, "POST", f"/carts/{cart_id}/checkout", until, headers=headers,
                       json={"email": "chaos@example.com",
                             "shipping_address": {**ADDRESS, "country": country}})
    if started is None or started.status_code != 201:
        return  # e.g. 409: a retry after the checkout was created; start over
    checkout_id = started.json()["id"]
    key = f"chaos-{uuid.uuid4().hex}"
    with ledger.lock:
        ledger.attempts[checkout_id] = key
    place_order(client, ledger, checkout_id, key, until)


def place_order(client: httpx.Client, ledger: Ledger, checkout_id: str, key: str,
                until: float) -> None:
    order = retrying(client, "POST", f"/checkouts/{checkout_id}/orders", until,
                     headers={"Idempotency-Key": key, "X-Checkout-Funnel": "warranties"},
                     json={"payment": {"method": "card", "token": "tok_visa"}})
    if order is not None and order.status_code == 201:
        with ledger.lock:
            previous = ledger.placed.setdefault(checkout_id, order.json()["id"])
        assert previous == order.json()["id"], "one key, one order"


def customers(url: str, ledger: Ledger, stop: threading.Event, threads: int) -> list[
    threading.Thread
]:
    def run(index: int) -> None:
        with httpx.Client(base_url=url, timeout=5) as client:
            while not stop.is_set():
                country = "DE" if index == 0 else "IE"  # one customer stays on legacy
                checkout_flow(client, ledger, country, time.monotonic() + 15)
                time.sleep(0.02)

    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    return workers


# -- the stack ------------------------------------------------------------------------------

@dataclass
class Stack:
    tmp: Path
    core_port: int
    proxy_port: int
    core_url: str
    legacy_url: str
    rules: Path
    downstream: downstream_fake.DownstreamState
    downstream_url: str
    db: Path
    gateway_ledger: Path
    report: Path
    exits: list[tuple[str, int | None]] = field(default_factory=list)

    @contextmanager
    def core(self, may_exit: bool = False, **env: str) -> Iterator[Process]:
        """A life of the core; with `may_exit`, one that may reach its crash point (under
        the customers' load) before it was seen ready."""
        with backend_process("tests.support.crashing_core", self.tmp, port=self.core_port,
                             env={**CORE_ENV, "CHECKOUT_CORE_DB_PATH": str(self.db),
                                  "CHECKOUT_CORE_GATEWAY_LEDGER_PATH": str(self.gateway_ledger),
                                  "CHECKOUT_CORE_DOWNSTREAM_URL": self.downstream_url,
                                  "CHECKOUT_CORE_CRASH_REPORT": str(self.report), **env},
                             ready="/readyz", may_exit=may_exit) as process:
            yield process

    @contextmanager
    def proxy(self) -> Iterator[ProxyProcess]:
        with strangler_serve(self.tmp, self.core_url, self.legacy_url, self.rules,
                             port=self.proxy_port,
                             env={"STRANGLER_CORE_CONNECT_TIMEOUT": "0.5"}) as process:
            yield process

    def crashes(self) -> list[dict[str, Any]]:
        if not self.report.exists():
            return []
        return [json.loads(line) for line in self.report.read_text().splitlines()]

    def query(self, sql: str, *args: Any, db: Path | None = None) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{db or self.db}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def charges(self) -> list[tuple[str, str, str, int]]:
        """The gateway's ledger: (checkout id, payment id, status, replays) per charge."""
        rows = self.query("SELECT idempotency_key, payment_id, status, replays FROM "
                          "gateway_charges ORDER BY seq", db=self.gateway_ledger)
        return [(key.split(":", 1)[0], payment, status, replays)
                for key, payment, status, replays in rows]


def settled(stack: Stack) -> bool:
    unpublished = stack.query("SELECT count(*) FROM outbox WHERE published_at IS NULL")[0][0]
    pending = stack.query("SELECT count(*) FROM stream_pending")[0][0]
    unread = stack.query(
        "SELECT count(*) FROM stream_messages WHERE seq > coalesce((SELECT last_seq FROM "
        "stream_groups WHERE name = 'order-sync'), 0)")[0][0]
    orders = {row[0] for row in stack.query("SELECT id FROM orders")}
    delivered = {r.order["order_id"] for r in stack.downstream.snapshot().values()}
    return unpublished + pending + unread == 0 and orders == delivered


# -- the events -----------------------------------------------------------------------------

def crash_at(point: str) -> Callable[[Stack, random.Random], None]:
    def event(stack: Stack, rng: random.Random) -> None:
        with stack.core(may_exit=True, CHECKOUT_CORE_CRASH_AT=point,
                        CHECKOUT_CORE_CRASH_AFTER=str(rng.randint(2, 6))) as core:
            wait_until(lambda: core.proc.poll() is not None, 30, f"the crash {point}")
            stack.exits.append((point, core.proc.returncode))
            if point == "after_commit":  # committed, never published: prove the crash point
                order_id = stack.crashes()[-1]["order_id"]
                assert stack.query("SELECT count(*) FROM orders WHERE id = ?", order_id) == [(1,)]
                assert stack.query(
                    "SELECT count(*) FROM outbox WHERE published_at IS NULL AND "
                    "idempotency_key = ?", f"order.placed:{order_id}") == [(1,)]
            else:  # charged (in the gateway's ledger), never committed
                checkout_id = stack.crashes()[-1]["gateway_key"].split(":", 1)[0]
                assert stack.query("SELECT count(*) FROM orders WHERE checkout_id = ?",
                                   checkout_id) == [(0,)]
                assert [(c, s) for c, _, s, _ in stack.charges() if c == checkout_id] == [
                    (checkout_id, "authorized")]
    return event


def consumer_mid_batch(stack: Stack, rng: random.Random) -> None:
    state = stack.downstream
    with stack.core() as core:
        time.sleep(rng.uniform(0.2, 0.6))
        with state.lock:
            state.stall_on_delivery = state.requests + 1
            state.released = threading.Event()
        target = state.stall_on_delivery
        wait_until(lambda: state.requests >= target, 20, "the stalled delivery")
        core.proc.kill()
        core.proc.wait(5)
        stack.exits.append(("consumer_mid_batch", core.proc.returncode))
    state.release()


def random_kill(stack: Stack, rng: random.Random) -> None:
    with stack.core() as core:
        time.sleep(rng.uniform(0.3, 1.2))
        core.proc.kill()
        core.proc.wait(5)
        stack.exits.append(("sigkill", core.proc.returncode))


EVENTS = {
    "after_payment": crash_at("after_payment"),
    "after_commit": crash_at("after_commit"),
    "consumer_mid_batch": consumer_mid_batch,
    "random_kill": random_kill,
}


def test_every_order_reaches_the_downstream_exactly_once_through_crashes(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(1 << 30))
    print(f"chaos seed: {seed} (rerun the same schedule with CHAOS_SEED={seed})")
    rng = random.Random(seed)
    plan = list(EVENTS)
    rng.shuffle(plan)
    proxy_killed_after = rng.randrange(len(plan) - 1)  # core crashes follow the restart
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    state = downstream_fake.DownstreamState(stall_seconds=30)
    ledger = Ledger()
    stop = threading.Event()
    with ExitStack() as es:
        downstream = es.enter_context(serve(downstream_fake.create_app(state)))
        legacy = es.enter_context(backend_process("legacy_stub", tmp_path, env={
            "LEGACY_STUB_LATENCY_MS": "0", "LEGACY_STUB_LATENCY_JITTER_MS": "0",
            "LEGACY_STUB_DECLINE_RATE": "0"}))
        # every life of the core, and of the proxy, on the same port: reserved for the test
        core_port = es.enter_context(reserved_port())
        stack = Stack(tmp_path, core_port, es.enter_context(reserved_port()),
                      f"http://127.0.0.1:{core_port}",
                      legacy.url, rules, state, downstream.url, tmp_path / "core.sqlite3",
                      tmp_path / "gateway.sqlite3", tmp_path / "crashes.jsonl")
        proxy = es.enter_context(ExitStack())
        served = proxy.enter_context(stack.proxy())
        workers = customers(served.url, ledger, stop, threads=4)
        try:
            for i, name in enumerate(plan):
                EVENTS[name](stack, rng)
                if i == proxy_killed_after:
                    served.proc.kill()
                    served.proc.wait(5)
                    proxy.close()
                    served = proxy.enter_context(stack.proxy())
            with stack.core() as core:  # the last life: no faults
                time.sleep(1.0)
                stop.set()
                for worker in workers:
                    worker.join(20)
                until = time.monotonic() + 15
                with httpx.Client(base_url=served.url, timeout=5) as client:
                    for checkout_id, key in list(ledger.attempts.items()):
                        if checkout_id not in ledger.placed and checkout_id.startswith("co_"):
                            place_order(client, ledger, checkout_id, key, until)
                wait_until(lambda: settled(stack), 20, "every order delivered downstream")
                assert core.proc.poll() is None
                metrics = served.metrics()
        finally:
            stop.set()

    charges = stack.charges()
    print(f"plan {plan}, proxy killed after #{proxy_killed_after}, exits {stack.exits}, "
          f"{len(ledger.placed)} orders acknowledged, {ledger.failovers} failovers, "
          f"{len(charges)} charges, {sum(c[3] for c in charges)} replayed authorizations")
    exits = dict(stack.exits)
    assert exits["after_payment"] == 137 and exits["after_commit"] == 137, stack.exits
    # no order placed twice: one per checkout
    per_checkout = stack.query("SELECT checkout_id, count(*) FROM orders GROUP BY checkout_id")
    assert all(count == 1 for _, count in per_checkout)
    orders = {row[0] for row in stack.query("SELECT id FROM orders")}
    # every order a customer was told about is durable, and every attempt ended in one
    core_placed = {c: o for c, o in ledger.placed.items() if c.startswith("co_")}
    assert set(core_placed.values()) <= orders
    unanswered = [c for c in ledger.attempts if c.startswith("co_") and c not in ledger.placed]
    assert not unanswered, unanswered
    # every order reached the downstream exactly once (recorded once per key)
    received = state.snapshot()
    assert sorted(r.order["order_id"] for r in received.values()) == sorted(orders)
    assert all(key == f"order.placed:{r.order['order_id']}" for key, r in received.items())
    # the crash points hit the orders they name, and those still arrived once
    crashed = stack.crashes()
    commit_crash = next(c for c in crashed if c["crash_at"] == "after_commit")
    assert f"order.placed:{commit_crash['order_id']}" in received
    payment_crash = next(c for c in crashed if c["crash_at"] == "after_payment")
    paid_checkout = payment_crash["gateway_key"].split(":", 1)[0]
    assert stack.query("SELECT count(*) FROM orders WHERE checkout_id = ?",
                       paid_checkout) == [(1,)]
    # no checkout charged twice: one authorization per order, the one the order records,
    # and none without an order
    authorized = [(c, payment) for c, payment, status, _ in charges if status == "authorized"]
    twice = {c: n for c, n in Counter(c for c, _ in authorized).items() if n > 1}
    assert not twice, twice
    assert dict(authorized) == dict(stack.query("SELECT checkout_id, payment_id FROM orders"))
    # the payment made before the crash was found by its key after the restart (the
    # restarted core reconciled first): never authorized again, not even as a replay
    assert [r for c, _, _, r in charges if c == paid_checkout] == [0]
    # the consumer killed mid-push: that delivery came again and was recognised
    assert max(r.deliveries for r in received.values()) >= 2
    assert len(orders) >= 20, len(orders)
    # failover where safe (new carts), and the core's failures counted against the core
    assert ledger.failovers > 0
    assert 'strangler_upstream_errors_total{backend="core",funnel="warranties"' in metrics
    assert 'strangler_upstream_errors_total{backend="legacy"' not in metrics
