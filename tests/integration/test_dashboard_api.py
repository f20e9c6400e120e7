"""The dashboard's page and JSON API through a running proxy (no browser)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from control.status import status_data
from control.status import status_data as cli_status_data
from tests.integration.conftest import RULES, Stack

TOKEN = "tok-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IE = {"X-Checkout-Funnel": "warranties", "X-Country": "IE"}  # ie-all: 100 % core

# The integration rules plus every signal, so the series have conversion and payments.
SIGNALS = """\
    signals:
      checkout_started: {method: POST, path: '^/carts/[^/]+/checkout$', status: [201]}
      payment_attempted: {method: POST, path: '^/checkouts/[^/]+/orders$', status: [201, 402, 500]}
      order_placed: {method: POST, path: '^/checkouts/[^/]+/orders$', status: [201]}
      payment_declined: {method: POST, path: '^/checkouts/[^/]+/orders$', status: [402]}
"""
RULES_WITH_SIGNALS = RULES.split("    signals:\n")[0] + SIGNALS + "    rules:\n" + (
    RULES.split("    rules:\n")[1])


def eventually(check: Callable[[], bool], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within}s")
        time.sleep(0.05)


def backend_of(url: str, headers: dict[str, str]) -> str:
    r = httpx.post(url + "/carts", headers={**headers, "X-Checkout-Session": uuid.uuid4().hex})
    return r.headers["x-checkout-backend"]


def post(stack: Stack, action: str, body: object, headers: dict[str, str] | None = None,
         ) -> httpx.Response:
    return httpx.post(f"{stack.url}/_strangler/api/{action}", json=body,
                      headers=AUTH if headers is None else headers)


def is_problem(r: httpx.Response, status: int) -> bool:
    return r.status_code == status and r.headers["content-type"] == "application/problem+json"


# -- the page --------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "ctype", "needle"), [
    ("/dashboard", "text/html", b'src="dashboard/dashboard.js"'),
    ("/dashboard/dashboard.js", "text/javascript", b'const API = "_strangler/api/"'),
    ("/dashboard/dashboard.css", "text/css", b"--core:"),
])
def test_the_page_and_its_files_are_served_without_a_token(make_stack, path, ctype, needle):
    stack = make_stack(admin_token=TOKEN)
    r = httpx.get(stack.url + path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(ctype)
    assert needle in r.content
    assert "default-src 'none'" in r.headers["content-security-policy"]


def test_the_page_loads_nothing_from_elsewhere(make_stack):
    stack = make_stack()
    for name in ("", "/dashboard.js", "/dashboard.css"):
        text = httpx.get(f"{stack.url}/dashboard{name}").text
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text and "//cdn" not in text


def test_unknown_dashboard_files_are_404_and_a_trailing_slash_redirects(make_stack):
    stack = make_stack()
    assert is_problem(httpx.get(stack.url + "/dashboard/secrets.txt"), 404)
    r = httpx.get(stack.url + "/dashboard/")
    assert r.status_code == 308 and r.headers["location"] == "../dashboard"
    assert httpx.post(stack.url + "/dashboard").status_code == 405


# -- reads -----------------------------------------------------------------------------------


def test_status_is_what_strangler_status_json_prints(make_stack):
    stack = make_stack()
    r = httpx.get(stack.url + "/_strangler/api/status")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert r.json() == status_data(stack.store) == cli_status_data(stack.store)
    assert [f["name"] for f in r.json()["funnels"]] == ["warranties"]


def test_reads_need_the_token_when_one_is_set(make_stack):
    stack = make_stack(admin_token=TOKEN)
    for endpoint in ("config", "status", "guardrails", "audit", "rollouts", "shadow",
                     "series?funnel=warranties"):
        url = f"{stack.url}/_strangler/api/{endpoint}"
        anonymous = httpx.get(url)
        assert is_problem(anonymous, 401), endpoint
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        assert is_problem(httpx.get(url, headers={"Authorization": "Bearer wrong"}), 401)
        assert httpx.get(url, headers=AUTH).status_code == 200, endpoint


def test_config_says_whether_the_dashboard_may_act(make_stack):
    assert httpx.get(make_stack().url + "/_strangler/api/config").json()["actions"] is False
    with_token = make_stack(admin_token=TOKEN)
    config = httpx.get(with_token.url + "/_strangler/api/config", headers=AUTH).json()
    assert config["actions"] is True and 2 <= config["poll_seconds"] <= 5


def test_series_give_each_minute_of_the_last_hour_for_both_arms(make_stack):
    stack = make_stack(rules=RULES_WITH_SIGNALS)
    with httpx.Client(base_url=stack.url, headers=IE) as client:
        for i in range(8):
            unit = {"X-Checkout-Session": f"unit-{i}-{uuid.uuid4().hex}"}
            assert client.post("/carts/co_cart_1/checkout", headers=unit).status_code == 201
            client.post("/checkouts/co_chk_1/orders", headers=unit)
        client.post("/carts", headers={"X-Test-Status": "500"})
        client.post("/carts", headers={"X-Test-Status": "500"})

    def current() -> dict:
        r = httpx.get(stack.url + "/_strangler/api/series", params={"funnel": "warranties"})
        assert r.status_code == 200
        series = r.json()
        assert len(series["points"]) == 60 and series["step_seconds"] == 60
        starts = [p["t"] for p in series["points"]]
        assert starts == sorted(starts) and starts[-1] <= series["now"] < starts[-1] + 60
        return {arm: sum(p[arm]["requests"] for p in series["points"][-2:])
                for arm in ("core", "legacy")} | {"last": series["points"][-2:]}

    eventually(lambda: current()["core"] == 18)
    last = current()["last"]
    core = [p["core"] for p in last if p["core"]["requests"]]
    assert sum(p["checkouts"] for p in core) == 8
    assert sum(p["payment_attempts"] for p in core) == 8
    if len(core) == 1:  # (a minute boundary may fall between a checkout and its order)
        assert core[0]["conversion"] == 1.0 and core[0]["payment_success"] == 1.0
    assert sum(p["error_rate"] * p["requests"] for p in core) == pytest.approx(2)
    assert all(p["p95_ms"] is not None and p["p95_ms"] > 0 for p in core)
    assert all(p["legacy"]["conversion"] is None for p in last)  # no data is not zero


def test_series_of_an_unknown_funnel_is_404_and_without_one_422(make_stack):
    stack = make_stack()
    api = stack.url + "/_strangler/api/series"
    assert is_problem(httpx.get(api, params={"funnel": "nope"}), 404)
    assert is_problem(httpx.get(api), 422)
    assert is_problem(httpx.get(api, params={"funnel": "warranties", "minutes": "x"}), 422)


def test_guardrails_give_the_monitors_latest_report(make_stack):
    stack = make_stack(guard_interval=0.2)
    httpx.post(stack.url + "/carts", headers=IE)

    def report() -> dict:
        return httpx.get(stack.url + "/_strangler/api/guardrails").json()

    eventually(lambda: report().get("at") is not None)
    assert report()["rules_version"] == "1"
    assert "warranties" in report()["traffic"]


def test_shadow_gives_the_parity_the_proxy_measured(make_stack):
    """Legacy serves DE (0 %); with a shadow of 100 % its cart creations are replayed to the
    core and compared; the proxy holding the monitor lease stores the summary each tick, and
    the endpoint answers it, as `strangler shadow status --json` prints it."""
    shadowed = RULES.replace("    salt: w1\n", "    salt: w1\n    shadow: {share: 100}\n")
    stack = make_stack(rules=shadowed, guard_interval=0.2, admin_token=TOKEN)
    api = stack.url + "/_strangler/api/shadow"
    assert is_problem(httpx.get(api), 401)
    de = {"X-Checkout-Funnel": "warranties", "X-Country": "DE"}
    for i in range(3):
        r = httpx.post(stack.url + "/carts", headers={**de, "X-Checkout-Session": f"unit-{i}-x"})
        assert r.headers["x-checkout-backend"] == "legacy"

    def compared() -> int:
        funnel = httpx.get(api, headers=AUTH).json()["funnels"].get("warranties") or {}
        return int((funnel.get("units") or {}).get("compared") or 0)

    eventually(lambda: compared() == 3, within=10)
    body = httpx.get(api, headers=AUTH).json()
    assert set(body) >= {"at", "window_seconds", "alpha", "funnels"}
    assert "POST /carts" in body["funnels"]["warranties"]["routes"]
    status = httpx.get(stack.url + "/_strangler/api/status", headers=AUTH).json()
    assert status["funnels"][0]["shadow"]["units"]["compared"] == 3
    assert status["funnels"][0]["shadow"]["lines"] == [(
        "warranties: shadow 100% of legacy-served units; all cart-building routes; parity "
        "needs 100 compared units")]


def test_unknown_endpoints_and_wrong_methods(make_stack):
    stack = make_stack(admin_token=TOKEN)
    api = stack.url + "/_strangler/api/"
    assert is_problem(httpx.get(api + "nothing", headers=AUTH), 404)
    wrong = httpx.get(api + "kill", headers=AUTH)
    assert is_problem(wrong, 405) and wrong.headers["allow"] == "POST"
    assert httpx.post(api + "status", headers=AUTH).headers["allow"] == "GET"


# -- kill and unkill -------------------------------------------------------------------------


def test_a_kill_from_the_dashboard_is_audited_and_sends_traffic_to_legacy(make_stack):
    stack = make_stack(admin_token=TOKEN)
    assert backend_of(stack.url, IE) == "core"
    r = post(stack, "kill", {"funnel": "warranties", "reason": "INC-7 drill", "name": "alice"})
    assert r.status_code == 200, r.text
    assert r.json() | {"at": 0} == {"scope": "warranties", "killed": True, "at": 0,
                                    "actor": "dashboard:alice", "reason": "INC-7 drill"}
    eventually(lambda: backend_of(stack.url, IE) == "legacy")
    decision = httpx.post(stack.url + "/carts", headers=IE).headers["x-checkout-decision"]
    assert decision.startswith("KILL_SWITCH;")
    entry = stack.store.audit_log(1)[0]
    assert (entry.actor, entry.action, entry.target, entry.reason) == (
        "dashboard:alice", "kill", "warranties", "INC-7 drill")
    audit = httpx.get(stack.url + "/_strangler/api/audit", headers=AUTH).json()
    assert audit[0]["action"] == "kill" and audit[0]["actor"] == "dashboard:alice"
    status = httpx.get(stack.url + "/_strangler/api/status", headers=AUTH).json()
    assert status["funnels"][0]["killed"] is True
    assert status["kill_switches"]["warranties"]["reason"] == "INC-7 drill"


def test_an_unkill_from_the_dashboard_routes_by_the_rules_again(make_stack):
    stack = make_stack(admin_token=TOKEN)
    assert post(stack, "kill", {"funnel": "warranties", "reason": "drill"}).status_code == 200
    eventually(lambda: backend_of(stack.url, IE) == "legacy")
    r = post(stack, "unkill", {"funnel": "warranties", "reason": "drill over"})
    assert r.status_code == 200
    assert r.json()["cleared"] is True and r.json()["actor"] == "dashboard"
    assert r.json()["previous"]["reason"] == "drill"
    eventually(lambda: backend_of(stack.url, IE) == "core")
    entry = stack.store.audit_log(1)[0]
    assert (entry.actor, entry.action, entry.reason) == ("dashboard", "unkill", "drill over")
    again = post(stack, "unkill", {"funnel": "warranties", "reason": "twice"})
    assert again.json()["cleared"] is False


def test_a_null_funnel_is_the_global_switch(make_stack):
    stack = make_stack(admin_token=TOKEN)
    r = post(stack, "kill", {"funnel": None, "reason": "everything out"})
    assert r.json()["scope"] == "*"
    eventually(lambda: backend_of(stack.url, IE) == "legacy")
    assert "*" in stack.store.kill_switches()


@pytest.mark.parametrize(("body", "status"), [
    ({"funnel": "warranties"}, 422),
    ({"funnel": "warranties", "reason": "   "}, 422),
    ({"funnel": "warranties", "reason": None}, 422),
    ({"funnel": "warranties", "reason": 42}, 422),
    ({"funnel": "nope", "reason": "typo"}, 422),
    ({"funnel": "warranties", "reason": "x" * 501}, 422),
    ({"funnel": "warranties", "reason": "ok", "name": "bad\nname"}, 422),
    (["warranties", "reason"], 400),
])
def test_invalid_kill_requests_are_refused_and_change_nothing(make_stack, body, status):
    stack = make_stack(admin_token=TOKEN)
    r = post(stack, "kill", body)
    assert is_problem(r, status), r.text
    assert stack.store.kill_switches() == {}


def test_kill_needs_the_token(make_stack):
    stack = make_stack(admin_token=TOKEN)
    body = {"funnel": "warranties", "reason": "no token"}
    assert is_problem(post(stack, "kill", body, headers={}), 401)
    assert is_problem(post(stack, "kill", body, headers={"Authorization": "Bearer nope"}), 401)
    assert is_problem(post(stack, "unkill", body, headers={}), 401)
    assert stack.store.kill_switches() == {}
    assert all(e.action != "kill" for e in stack.store.audit_log(10))


def test_without_a_configured_token_the_dashboard_is_read_only(make_stack):
    stack = make_stack()
    r = post(stack, "kill", {"funnel": "warranties", "reason": "nobody"}, headers={})
    assert is_problem(r, 403)
    assert "STRANGLER_ADMIN_TOKEN" in r.json()["detail"]
    assert stack.store.kill_switches() == {}


def test_kill_bodies_must_be_json(make_stack):
    stack = make_stack(admin_token=TOKEN)
    url = stack.url + "/_strangler/api/kill"
    form = httpx.post(url, data={"reason": "x"}, headers=AUTH)
    assert is_problem(form, 415)
    garbage = httpx.post(url, content=b"{oops", headers={**AUTH,
                                                         "Content-Type": "application/json"})
    assert is_problem(garbage, 400)
    huge = httpx.post(url, content=b" " * 20_000, headers={**AUTH,
                                                           "Content-Type": "application/json"})
    assert is_problem(huge, 413)
