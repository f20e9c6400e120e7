"""Hot reload, kill switch and stickiness through a running proxy."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest

from control import operations as control
from control.store.sqlite_store import SqliteControlStore
from tests.integration.conftest import RULES

FR = {"X-Checkout-Funnel": "warranties", "X-Country": "FR"}
IE = {"X-Checkout-Funnel": "warranties", "X-Country": "IE"}


def eventually(check: Callable[[], bool], within: float = 1.0) -> float:
    """Seconds until `check()` held; fails when it did not within `within` seconds."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > within:
            pytest.fail(f"condition not met within {within}s")
        time.sleep(0.02)
    return time.monotonic() - started


def backend_of(url: str, headers: dict[str, str], unit: str | None = None) -> str:
    """The backend that serves a POST /carts; a fresh unit each call unless one is given
    (a unit that was served becomes sticky)."""
    unit = unit or f"unit-{uuid.uuid4().hex}"
    r = httpx.post(url + "/carts", headers={**headers, "X-Checkout-Session": unit})
    return r.headers["x-checkout-backend"]


def test_kill_switch_reaches_the_proxy_within_a_second(make_stack):
    stack = make_stack()
    assert backend_of(stack.url, IE) == "core"
    cli_store = SqliteControlStore(stack.settings.db_path)  # another process's view
    control.kill(cli_store, "warranties", actor="test", reason="drill")
    eventually(lambda: backend_of(stack.url, IE) == "legacy")
    r = httpx.post(stack.url + "/carts", headers=IE)
    assert r.headers["x-checkout-decision"].startswith("KILL_SWITCH;")
    control.unkill(cli_store, "warranties", actor="test", reason="drill over")
    eventually(lambda: backend_of(stack.url, IE) == "core")
    cli_store.close()


def test_global_kill_switch_also_covers_requests_naming_core_ids(make_stack):
    stack = make_stack()
    control.kill(stack.store, None, actor="test", reason="all out")
    eventually(lambda: httpx.get(stack.url + "/carts/co_cart_1").headers[
        "x-checkout-backend"] == "legacy")


def test_editing_the_rules_file_takes_effect_within_a_second(make_stack):
    stack = make_stack()
    assert backend_of(stack.url, IE) == "core"
    stack.rules_file.write_text(RULES.replace("percent: 100", "percent: 0"))
    eventually(lambda: backend_of(stack.url, IE) == "legacy")
    r = httpx.post(stack.url + "/carts", headers={**IE, "X-Checkout-Session": "fresh-unit-2"})
    assert r.headers["x-checkout-decision"].endswith("rules=2")


def test_an_invalid_rules_file_is_rejected_and_the_last_good_rules_keep_serving(make_stack):
    stack = make_stack()
    stack.rules_file.write_text(RULES.replace("percent: 100", "percent: 900"))
    # the proof that the watcher read the broken file before we look: its refusal counted
    eventually(lambda: "strangler_rules_reload_failures_total 1.0" in httpx.get(
        stack.url + "/metrics").text, within=10)
    r = httpx.post(stack.url + "/carts", headers={**IE, "X-Checkout-Session": "fresh-unit-3"})
    assert r.headers["x-checkout-backend"] == "core"
    assert r.headers["x-checkout-decision"].endswith("rules=1")
    metrics = httpx.get(stack.url + "/metrics").text
    assert "strangler_rules_reload_failures_total 1.0" in metrics


def test_rules_applied_through_the_store_take_effect_within_a_second(make_stack):
    stack = make_stack()
    store = SqliteControlStore(stack.settings.db_path)
    control.ramp(store, "warranties", "IE", Decimal(0), actor="t",
                 reason="roll back IE")
    eventually(lambda: backend_of(stack.url, IE) == "legacy")
    store.close()


def test_without_valid_rules_everything_goes_to_legacy(make_stack, caplog):
    stack = make_stack(rules="funnels: [oops")
    r = httpx.post(stack.url + "/carts", headers=IE)
    assert r.headers["x-checkout-backend"] == "legacy"
    assert r.headers["x-checkout-decision"] == "DEFAULT; rules=none"
    health = httpx.get(stack.url + "/_strangler/healthz").json()
    assert health["rules_version"] is None and health["rules_error"]


def test_lowering_a_percentage_keeps_units_with_a_checkout_in_flight(make_stack):
    stack = make_stack()
    units = [f"unit-{i:06d}" for i in range(60)]
    first = {u: backend_of(stack.url, FR, u) for u in units}
    in_core = [u for u, b in first.items() if b == "core"]
    assert 10 < len(in_core) < 50
    stack.rules_file.write_text(RULES.replace("percent: 50", "percent: 0"))
    eventually(lambda: backend_of(stack.url, FR) == "legacy")
    for unit in in_core:  # in flight: they stay on core
        r = httpx.post(stack.url + "/carts", headers={**FR, "X-Checkout-Session": unit})
        assert r.headers["x-checkout-backend"] == "core"
        assert r.headers["x-checkout-decision"].startswith("STICKY;")
    # placing the order ends the checkout; the next one follows the new percentage
    unit = in_core[0]
    placed = httpx.post(stack.url + "/checkouts/co_chk_1/orders",
                        headers={**FR, "X-Checkout-Session": unit})
    assert placed.status_code == 201
    assert backend_of(stack.url, FR, unit) == "legacy"


def test_a_unit_never_seen_before_follows_the_rules_not_stickiness(make_stack):
    stack = make_stack()
    r = httpx.post(stack.url + "/carts", headers={**FR, "X-Checkout-Session": "unit-neverseen"})
    assert r.headers["x-checkout-decision"].startswith("RULE;")
