"""One order is one payment attempt and one conversion, however the client retries.

`strangler serve` in front of the real checkout core (crashing right after the gateway
charged, then restarted on the same port, as a deploy would) and the legacy stub; the
guardrails' telemetry goes to a real Redis, where the test reads what the monitor judges.
The customer retries through the crash (502, then 503s while the core is down) and then
replays the placed order 200 times with the same Idempotency-Key.
"""

from __future__ import annotations

import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from guardrails.telemetry_redis import RedisTelemetry
from tests.support.processes import backend_process, strangler_serve, wait_until
from tests.support.servers import reserved_port

pytestmark = pytest.mark.e2e

RULES = """\
schema: 1
funnels:
  - name: warranties
    match: {header: warranties}
    salt: once
    signals:
      checkout_started: {method: POST, path: '^/carts/[^/]+/checkout$', status: [201]}
      payment_attempted: {method: POST, path: '^/checkouts/[^/]+/orders$', status: [201, 402, 500, 502, 503, 504]}
      order_placed: {method: POST, path: '^/checkouts/[^/]+/orders$', status: [201]}
      payment_declined: {method: POST, path: '^/checkouts/[^/]+/orders$', status: [402]}
    rules:
      - {id: ie-core, countries: [IE], percent: 100}
"""
ADDRESS = {"name": "Once", "line1": "1 Main St", "city": "Cork", "postal_code": "T12",
           "country": "IE"}


def test_one_order_through_a_crash_and_200_replays_counts_one_attempt_and_one_order(
    tmp_path: Path, redis_clean_url: str,
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    core_env = {
        "CHECKOUT_CORE_DB_PATH": str(tmp_path / "core.sqlite3"),
        "CHECKOUT_CORE_GATEWAY_LEDGER_PATH": str(tmp_path / "gateway.sqlite3"),
        "CHECKOUT_CORE_GATEWAY_LATENCY_MS": "2",
        "CHECKOUT_CORE_IDEMPOTENCY_LEASE_SECONDS": "1",
        "CHECKOUT_CORE_RUN_CONSUMER": "false",
    }
    started = time.time()
    with ExitStack() as es:
        legacy = es.enter_context(backend_process("legacy_stub", tmp_path, env={
            "LEGACY_STUB_LATENCY_MS": "0", "LEGACY_STUB_LATENCY_JITTER_MS": "0"}))
        core_port = es.enter_context(reserved_port())
        core_url = f"http://127.0.0.1:{core_port}"
        proxy = es.enter_context(strangler_serve(
            tmp_path, core_url, legacy.url, rules,
            env={"STRANGLER_TRAFFIC_REDIS_URL": redis_clean_url,
                 "STRANGLER_CORE_CONNECT_TIMEOUT": "0.5"}))
        client = es.enter_context(httpx.Client(base_url=proxy.url, timeout=15))
        headers = {"X-Checkout-Funnel": "warranties", "X-Country": "IE",
                   "X-Checkout-Session": f"once-{uuid.uuid4().hex}"}
        key = {"Idempotency-Key": f"order-{uuid.uuid4().hex}"}
        order_path = ""
        payment = {"payment": {"method": "card", "token": "tok_visa"}}

        with backend_process("tests.support.crashing_core", tmp_path, port=core_port,
                             ready="/readyz", may_exit=True, env={
                                 **core_env, "CHECKOUT_CORE_CRASH_AT": "after_payment",
                                 "CHECKOUT_CORE_CRASH_AFTER": "1"}) as core:
            cart = client.post("/carts", headers=headers, json={"currency": "EUR",
                                                                "country": "IE"})
            assert cart.status_code == 201 and cart.headers["x-checkout-backend"] == "core"
            cart_id = cart.json()["id"]
            assert client.post(f"/carts/{cart_id}/items", headers=headers,
                               json={"sku": "WR-CARE-2Y", "quantity": 1}).status_code == 201
            checkout = client.post(f"/carts/{cart_id}/checkout", headers=headers, json={
                "email": "once@example.com", "shipping_address": ADDRESS})
            assert checkout.status_code == 201
            order_path = f"/checkouts/{checkout.json()['id']}/orders"
            crashed = client.post(order_path, headers={**headers, **key}, json=payment)
            assert crashed.status_code == 502  # the core died after the charge
            wait_until(lambda: core.proc.poll() is not None, 30, "the crash after payment")
        # the client keeps retrying while the core is down: the order names a core id, so
        # legacy cannot serve it (OWNER 503s), and each retry is a payment_attempted signal
        down = [client.post(order_path, headers={**headers, **key}, json=payment)
                for _ in range(20)]
        assert {r.status_code for r in down} == {503}
        with backend_process("tests.support.crashing_core", tmp_path, port=core_port,
                             ready="/readyz", env=core_env):
            def placed() -> httpx.Response | None:
                r = client.post(order_path, headers={**headers, **key}, json=payment)
                return r if r.status_code == 201 else None

            order = wait_until(placed, 30, "the order placed after the restart")
            replays = [client.post(order_path, headers={**headers, **key}, json=payment)
                       for _ in range(200)]
            assert {r.status_code for r in replays} == {201}
            assert {r.json()["id"] for r in replays} == {order.json()["id"]}

            telemetry = RedisTelemetry(redis_clean_url, bucket_seconds=10)
            try:
                def counted():  # the proxy flushes its telemetry every second
                    core_arm = telemetry.window("warranties", started - 60,
                                                time.time() + 1).core
                    return core_arm if core_arm.requests >= 224 else None

                arm = wait_until(counted, 30, "the requests in the telemetry")
                assert (arm.payment_attempts, arm.payment_successes,
                        arm.payment_declines) == (1, 1, 0)
                assert (arm.checkout_units, arm.converted_units) == (1, 1)
            finally:
                telemetry.close()
