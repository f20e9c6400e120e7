"""The guardrail monitor inside a running proxy: real traffic, real trips."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from guardrails.monitor import REPORT_KEY

RULES = """\
schema: 1
guardrails:
  alpha: 0.01
  min_samples: 30
  conversion: null
  latency_p95: null
  sample_ratio: null
  payment_success: {max_absolute_drop: 0.2, floor: 0.5}
  error_budget:
    slo: 0.99
    min_requests: 20
    windows: [{long: 20s, short: 5s, burn_rate: 5}]
funnels:
  - name: warranties
    match: {header: warranties}
    salt: w1
    signals:
      payment_attempted: {method: POST, path: '^/carts$', status: [201, 402, 500, 502]}
      order_placed: {method: POST, path: '^/carts$', status: [201]}
    rules:
      - {id: half, countries: '*', percent: 50}
"""
PAYMENT_ONLY = RULES.replace("""  error_budget:
    slo: 0.99
    min_requests: 20
    windows: [{long: 20s, short: 5s, burn_rate: 5}]
""", "  error_budget: null\n")
ERRORS_ONLY = RULES.replace("payment_success: {max_absolute_drop: 0.2, floor: 0.5}",
                            "payment_success: null")
FUNNEL = {"X-Checkout-Funnel": "warranties", "X-Country": "FR"}
FAST = {"guard_interval": 0.2, "telemetry_bucket_seconds": 1}


def drive(url: str, n: int) -> list[httpx.Response]:
    with httpx.Client(base_url=url, timeout=10) as client, ThreadPoolExecutor(8) as pool:
        return list(pool.map(
            lambda _: client.post("/carts", headers={
                **FUNNEL, "X-Checkout-Session": f"u-{uuid.uuid4().hex}"}),
            range(n),
        ))


def report(stack) -> dict:
    raw = stack.store.get_meta(REPORT_KEY)
    return json.loads(raw) if raw else {}


def ticked_since(stack, mark: float, ticks: int = 2) -> dict:
    """The monitor's report once it has ticked `ticks` times after `mark` (time.time()): the
    proof that it judged everything recorded before `mark` (each tick flushes the telemetry
    first; the second one also covers an outcome recorded just after the first flush)."""
    for _ in range(ticks):
        latest = wait_for(lambda m=mark: report(stack) if report(stack).get("at", 0) > m
                          else None, within=20)
        mark = latest["at"]
    return latest


def wait_for(check, within: float):
    """The first truthy `check()`; generous `within`: a busy machine only makes it later."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"not within {within}s")


def test_a_failing_core_trips_the_funnel_kill_switch_with_evidence(make_stack):
    stack = make_stack(rules=PAYMENT_ONLY, **FAST)
    stack.core_app.force_status = 500
    drive(stack.url, 300)
    switch = wait_for(lambda: stack.store.kill_switches().get("warranties"), within=20)
    assert switch.actor == "guardrail-monitor"
    assert "payment_success" in switch.reason
    evidence = switch.evidence
    assert evidence["funnel"] == "warranties" and evidence["rules_version"] == "1"
    failed = {g["name"]: g for g in evidence["guardrails"] if g["verdict"] == "fail"}
    payment = failed["payment_success"]
    assert payment["core_estimate"] < 0.5 < payment["legacy_estimate"]
    assert payment["n_core"] >= 30 and payment["n_legacy"] >= 30
    assert payment["bound"] is not None and payment["threshold"] is not None
    # every request now goes to legacy, and the trip is audited
    after = drive(stack.url, 20)
    assert {r.headers["x-checkout-decision"].split(";")[0] for r in after} == {"KILL_SWITCH"}
    entry = stack.store.audit_log(5)[0]
    assert (entry.actor, entry.action, entry.target) == ("guardrail-monitor", "kill",
                                                         "warranties")
    metrics = httpx.get(stack.url + "/metrics").text
    assert 'strangler_guardrail_trips_total{funnel="warranties",guardrail="payment_success"}' \
        in metrics


def test_burning_the_error_budget_trips_the_kill_switch(make_stack):
    stack = make_stack(rules=ERRORS_ONLY, **FAST)
    stack.core_app.force_status = 503
    drive(stack.url, 200)
    switch = wait_for(lambda: stack.store.kill_switches().get("warranties"), within=20)
    assert "error_budget" in switch.reason
    budget = next(g for g in switch.evidence["guardrails"] if g["name"] == "error_budget")
    assert budget["verdict"] == "fail"


def test_the_trip_stays_latched_until_a_person_clears_it(make_stack):
    from control import operations as control

    stack = make_stack(rules=RULES, **FAST)
    stack.core_app.force_status = 500
    drive(stack.url, 300)
    failed_until = time.time()
    wait_for(lambda: stack.store.kill_switches().get("warranties"), within=20)
    stack.core_app.force_status = None
    drive(stack.url, 20)
    # ticks after the failures' last telemetry bucket is over: a window starting in that
    # bucket still counts them (buckets are whole), so clearing earlier would re-trip
    ticked_since(stack, failed_until + FAST["telemetry_bucket_seconds"])
    assert "warranties" in stack.store.kill_switches()  # healthy again, still latched
    control.unkill(stack.store, "warranties", actor="oncall", reason="fixed")
    drive(stack.url, 100)
    ticked_since(stack, time.time())
    assert "warranties" not in stack.store.kill_switches()  # judged afresh: no re-trip


def test_a_healthy_core_does_not_trip_and_the_report_shows_both_arms(make_stack):
    stack = make_stack(rules=RULES, **FAST)
    drive(stack.url, 300)
    funnel = ticked_since(stack, time.time())["funnels"]["warranties"]
    assert stack.store.kill_switches() == {}
    assert funnel["verdict"] in ("pass", "insufficient_data")
    payment = next(g for g in funnel["guardrails"] if g["name"] == "payment_success")
    assert payment["core_estimate"] == 1.0 and payment["legacy_estimate"] == 1.0
    assert payment["n_core"] + payment["n_legacy"] == 300


def test_no_traffic_is_insufficient_data_and_never_trips(make_stack):
    stack = make_stack(rules=RULES, **FAST)
    funnel = wait_for(lambda: report(stack).get("funnels", {}).get("warranties"), within=20)
    assert funnel["verdict"] == "insufficient_data"
    assert stack.store.kill_switches() == {}


def test_a_staged_rollout_advances_on_passing_guardrails_and_stops_on_a_trip(make_stack):
    from decimal import Decimal

    from control import operations as control
    from control import rollout

    stack = make_stack(rules=RULES, **FAST)
    plan = rollout.new_rollout("warranties", "FR", [Decimal(p) for p in ("20", "60", "100")],
                               1.5, reason="test", actor="rm")
    control.ramp(stack.store, "warranties", "FR", plan.percent, actor="rm", reason="start")
    rollout.register(stack.store, plan)

    def state():
        drive(stack.url, 60)
        current = rollout.load(stack.store, plan.id)
        return current if current.step_index == 1 else None

    advanced = wait_for(state, within=20)
    assert advanced.state is rollout.State.RUNNING
    r = httpx.post(stack.url + "/carts", headers={**FUNNEL, "X-Checkout-Session": "u-after-1"})
    assert r.headers["x-checkout-decision"].startswith("RULE; rule=warranties-fr;")
    # now the core breaks: the monitor trips, and the rollout stops with the switch latched
    stack.core_app.force_status = 500

    def stopped():
        drive(stack.url, 60)
        current = rollout.load(stack.store, plan.id)
        return current if current.state not in rollout.ACTIVE else None

    final = wait_for(stopped, within=20)
    assert final.state is rollout.State.STOPPED and final.step_index == 1
    assert "warranties" in stack.store.kill_switches()


@pytest.mark.redis
def test_replicas_pool_telemetry_in_redis_and_one_monitor_trips(redis_clean_url, tmp_path):
    from contextlib import ExitStack

    from control import operations as control
    from control.store.redis_store import RedisControlStore
    from proxy.config import ProxySettings
    from proxy.main import UVICORN_OPTIONS, create_app
    from tests.support.backends import EchoBackend
    from tests.support.servers import serve

    store = RedisControlStore(redis_clean_url)
    control.apply_rules_text(store, PAYMENT_ONLY, source="t", actor="t", reason="seed")
    with ExitStack() as stack:
        core = EchoBackend("core", force_status=500)
        core_url = stack.enter_context(serve(core)).url
        legacy_url = stack.enter_context(serve(EchoBackend("legacy"))).url
        apps, urls = [], []
        for i in range(2):
            app = create_app(ProxySettings(
                core_url=core_url, legacy_url=legacy_url, redis_url=redis_clean_url,
                db_path=str(tmp_path / f"{i}.sqlite3"), **FAST))
            apps.append(app)
            urls.append(stack.enter_context(serve(app, **UVICORN_OPTIONS)).url)
        # each replica alone sees too little to judge (min_samples 30 per arm)
        for url in urls:
            drive(url, 40)
        switch = wait_for(lambda: store.kill_switches().get("warranties"), within=20)
        payment = next(g for g in switch.evidence["guardrails"] if g["name"] == "payment_success")
        assert payment["n_core"] + payment["n_legacy"] == 80  # both replicas' traffic
        holders = [a.rt.lease.hold() for a in apps]
        assert sorted(holders) == [False, True]  # exactly one monitor
    store.close()


def test_a_trip_is_posted_to_the_webhook_with_its_evidence(make_stack):
    from tests.support.servers import serve

    received: list[dict] = []

    async def webhook(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        received.append(json.loads(body))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with serve(webhook) as hook:
        stack = make_stack(rules=PAYMENT_ONLY, guard_webhook_url=hook.url + "/trips", **FAST)
        stack.core_app.force_status = 500
        drive(stack.url, 300)
        event = wait_for(lambda: received[0] if received else None, within=20)
    assert event["event"] == "guardrail.tripped" and event["scope"] == "warranties"
    assert "payment_success" in event["evidence"]["failed"]
    assert event["evidence"]["rules_version"] == "1"


def test_an_insufficient_guardrail_says_what_it_lacks_and_when_it_may_have_it(make_stack):
    stack = make_stack(rules=PAYMENT_ONLY, **FAST)
    drive(stack.url, 20)

    def waiting():
        funnel = report(stack).get("funnels", {}).get("warranties")
        if not funnel:
            return None
        [payment] = [g for g in funnel["guardrails"] if g["name"] == "payment_success"]
        return payment.get("waiting")

    wait = wait_for(waiting, within=10)
    assert "of 30 payment attempts" in wait["lacks"]
    assert wait["per_minute"]["core"] > 0 and wait["eta_seconds"] is not None
    assert "payment attempts/min" in wait["text"]
