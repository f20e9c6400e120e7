"""The admin app on its own (`admin.app.create_admin_app`), over a real SQLite store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from admin.app import create_admin_app
from control.operations import apply_rules_text
from control.rules import RuleSet
from control.rules_loader import load_rules_text
from control.store import ControlStore, open_store
from guardrails.model import FunnelWindow
from guardrails.telemetry import MemoryTelemetry

TOKEN = "tok-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RULES_TEXT = """\
schema: 1
funnels:
  - name: warranties
    match: {header: warranties}
    salt: w1
    rules:
      - {id: all, countries: '*', percent: 50}
"""
RULES = load_rules_text(RULES_TEXT, "1")
OK = {"status": "ok", "rules_version": "1"}
READS = ["config", "status", "guardrails", "series?funnel=warranties", "audit", "rollouts",
         "shadow"]
JSON = {"Content-Type": "application/json"}
KILL = {"funnel": "warranties", "reason": "INC-1"}


class BrokenTelemetry:
    def window(self, funnel: str, since: float, until: float) -> FunnelWindow:
        raise RuntimeError("telemetry is broken")


AppFactory = Callable[..., Starlette]


@pytest.fixture
def store(tmp_path: Path) -> ControlStore:
    """A store whose active rules are RULES (kill and unkill check the funnel there)."""
    store = open_store(None, str(tmp_path / "s.sqlite3"))
    apply_rules_text(store, RULES_TEXT, source="test", actor="test", reason="setup")
    return store


@pytest.fixture
def make_app(store: ControlStore) -> AppFactory:
    def build(token: str | None = TOKEN, health: dict[str, Any] | None = None,
              rules: RuleSet | None = RULES, telemetry: Any = None,
              control_store: ControlStore | None = None, body_idle_timeout: float = 5.0,
              unready: str | None = None) -> Starlette:
        return create_admin_app(
            store=control_store or store, metrics_text=lambda: b"strangler_up 1.0\n",
            health=lambda: dict(health or OK), unready=lambda: unready, rules=lambda: rules,
            local_report=dict, telemetry=telemetry or MemoryTelemetry(1),
            token=token, body_idle_timeout=body_idle_timeout,
        )
    return build


@pytest.fixture
async def client(make_app: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client(make_app()) as c:
        yield c


def admin_client(app: Starlette, raise_errors: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_errors)
    return httpx.AsyncClient(transport=transport, base_url="http://admin")


def is_problem(r: httpx.Response, status: int, slug: str) -> bool:
    return r.status_code == status and (
        r.headers["content-type"] == "application/problem+json") and (
        r.json()["type"].endswith("/" + slug) and r.json()["status"] == status)


# -- routing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "detail"), [
    ("/nothing", "no such admin endpoint"),
    ("/_strangler/nothing", "no such admin endpoint"),
    ("/metrics/", "no such admin endpoint"),  # no redirect to /metrics
    ("/_strangler/api/nothing", "no such dashboard endpoint"),
    ("/_strangler/api/status/", "no such dashboard endpoint"),
    ("/dashboard/secrets.txt", "no such dashboard file"),
    ("/dashboard/a/b", "no such dashboard file"),
])
async def test_unknown_paths_are_404_problems(client: httpx.AsyncClient, path: str,
                                              detail: str) -> None:
    r = await client.get(path, headers=AUTH)
    assert is_problem(r, 404, "not-found")
    assert r.json()["detail"] == detail and r.json()["instance"] == path


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("POST", "/metrics", "GET, HEAD"),
    ("DELETE", "/_strangler/healthz", "GET, HEAD"),
    ("PUT", "/_strangler/state", "GET, HEAD"),
    ("POST", "/dashboard", "GET, HEAD"),
    ("POST", "/dashboard/dashboard.js", "GET, HEAD"),
    ("POST", "/_strangler/api/status", "GET"),
    ("HEAD", "/_strangler/api/config", "GET"),
    ("GET", "/_strangler/api/kill", "POST"),
    ("PUT", "/_strangler/api/unkill", "POST"),
])
async def test_wrong_methods_are_405_problems_with_allow(
    client: httpx.AsyncClient, method: str, path: str, allow: str,
) -> None:
    r = await client.request(method, path, headers=AUTH)
    assert r.status_code == 405 and r.headers["allow"] == allow
    if method != "HEAD":
        assert is_problem(r, 405, "method-not-allowed")
        assert r.json()["detail"] == "use " + allow.split(",")[0]


# -- the token -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "/metrics", "/_strangler/healthz", "/_strangler/state", "/nothing",
    *(f"/_strangler/api/{read}" for read in READS),
])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}",
                                           f"Bearer {TOKEN}x", "Bearer"])
async def test_without_the_token_admin_paths_are_401(
    client: httpx.AsyncClient, path: str, authorization: str | None,
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    r = await client.get(path, headers=headers)
    assert is_problem(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == 'Bearer realm="strangler"'
    assert "STRANGLER_ADMIN_TOKEN" in r.json()["detail"]


@pytest.mark.parametrize("action", ["kill", "unkill"])
async def test_kill_and_unkill_without_the_token_are_401_and_change_nothing(
    client: httpx.AsyncClient, store: ControlStore, action: str,
) -> None:
    r = await client.post(f"/_strangler/api/{action}", json=KILL)
    assert is_problem(r, 401, "unauthorized") and "www-authenticate" in r.headers
    assert store.kill_switches() == {}


@pytest.mark.parametrize(("path", "ctype"), [
    ("/dashboard", "text/html"), ("/dashboard/dashboard.js", "text/javascript"),
    ("/dashboard/dashboard.css", "text/css"),
])
async def test_the_page_and_its_files_need_no_token(client: httpx.AsyncClient, path: str,
                                                    ctype: str) -> None:
    r = await client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith(ctype)
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "www-authenticate" not in r.headers


async def test_a_trailing_slash_on_the_page_redirects_to_it(client: httpx.AsyncClient) -> None:
    r = await client.get("/dashboard/")
    assert r.status_code == 308 and r.headers["location"] == "../dashboard"


@pytest.mark.parametrize("path", ["/metrics", "/_strangler/healthz", "/_strangler/state",
                                  *(f"/_strangler/api/{read}" for read in READS)])
async def test_with_the_token_admin_paths_answer(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path, headers=AUTH)).status_code == 200


async def test_without_a_configured_token_reads_are_open(make_app: AppFactory) -> None:
    async with admin_client(make_app(token=None)) as client:
        for path in ("/metrics", *(f"/_strangler/api/{read}" for read in READS)):
            assert (await client.get(path)).status_code == 200, path
        config = (await client.get("/_strangler/api/config")).json()
    assert config == {"actions": False, "poll_seconds": 3, "series_minutes": 60}


@pytest.mark.parametrize("action", ["kill", "unkill"])
async def test_without_a_configured_token_kill_and_unkill_are_403(
    make_app: AppFactory, store: ControlStore, action: str,
) -> None:
    async with admin_client(make_app(token=None)) as client:
        r = await client.post(f"/_strangler/api/{action}", json=KILL, headers=AUTH)
    assert is_problem(r, 403, "actions-disabled")
    assert "STRANGLER_ADMIN_TOKEN" in r.json()["detail"]
    assert store.kill_switches() == {}


# -- answers ---------------------------------------------------------------------------------


async def test_metrics_are_prometheus_text(client: httpx.AsyncClient) -> None:
    r = await client.get("/metrics", headers=AUTH)
    assert r.headers["content-type"] == "text/plain; version=0.0.4"
    assert r.text == "strangler_up 1.0\n"


@pytest.mark.parametrize(("status", "healthz"), [("ok", 200), ("degraded", 503)])
async def test_healthz_is_503_unless_ok_and_state_always_200(
    make_app: AppFactory, status: str, healthz: int,
) -> None:
    async with admin_client(make_app(health={"status": status})) as client:
        health = await client.get("/_strangler/healthz", headers=AUTH)
        state = await client.get("/_strangler/state", headers=AUTH)
    assert (health.status_code, health.json()) == (healthz, {"status": status})
    assert (state.status_code, state.json()) == (200, {"status": status})


@pytest.mark.parametrize("authorization", [None, "Bearer wrong"])
async def test_the_probes_need_no_token_and_reveal_nothing(
    client: httpx.AsyncClient, authorization: str | None,
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    live = await client.get("/livez", headers=headers)
    ready = await client.get("/readyz", headers=headers)
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    assert live.headers["cache-control"] == "no-store"
    head = await client.head("/readyz")
    assert head.status_code == 200 and head.content == b""


async def test_readyz_is_a_503_problem_with_the_reason_and_livez_stays_200(
    make_app: AppFactory,
) -> None:
    reason = "no routing state yet: the control store has not answered"
    async with admin_client(make_app(unready=reason,
                                     health={"status": "degraded"})) as client:
        ready = await client.get("/readyz")
        live = await client.get("/livez")
    assert is_problem(ready, 503, "not-ready")
    assert ready.json()["detail"] == reason and ready.headers["retry-after"] == "1"
    assert live.status_code == 200  # the process answers: no restart for a store outage


async def test_the_probes_take_get_and_head_only(client: httpx.AsyncClient) -> None:
    r = await client.post("/readyz")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


async def test_api_answers_are_json_never_cached(client: httpx.AsyncClient) -> None:
    r = await client.get("/_strangler/api/config", headers=AUTH)
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    assert r.json() == {"actions": True, "poll_seconds": 3, "series_minutes": 60}


async def test_shadow_answers_the_summary_the_proxy_stored(
    client: httpx.AsyncClient, store: ControlStore,
) -> None:
    from shadow.report import store_summary

    before = await client.get("/_strangler/api/shadow", headers=AUTH)
    assert before.json() == {"at": None, "funnels": {}}  # no proxy wrote one yet
    units = {"compared": 400, "with_mismatch": 1, "parity": 0.9975,
             "parity_interval": [0.98, 0.9999]}
    store_summary(store, {"window_seconds": 86400.0, "alpha": 0.05, "funnels": {
        "warranties": {"units": units, "dropped": {"queue_full": 2}, "comparisons": 900,
                       "mismatches": 1, "routes": {}}}})
    r = await client.get("/_strangler/api/shadow", headers=AUTH)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert r.json()["funnels"]["warranties"]["units"] == units
    assert r.json()["funnels"]["warranties"]["dropped"] == {"queue_full": 2}
    assert isinstance(r.json()["at"], float)


async def test_a_kill_is_written_to_the_store_and_answered(
    client: httpx.AsyncClient, store: ControlStore,
) -> None:
    r = await client.post("/_strangler/api/kill", json={**KILL, "name": "ana"}, headers=AUTH)
    assert r.status_code == 200
    assert r.json() | {"at": 0} == {"scope": "warranties", "killed": True, "at": 0,
                                    "actor": "dashboard:ana", "reason": "INC-1"}
    assert set(store.kill_switches()) == {"warranties"}
    cleared = await client.post("/_strangler/api/unkill", json=KILL, headers=AUTH)
    assert cleared.json()["cleared"] is True and store.kill_switches() == {}


async def test_unkill_of_a_switch_that_is_not_set_says_so_and_writes_nothing(
    client: httpx.AsyncClient, store: ControlStore,
) -> None:
    audited = len(store.audit_log(100))
    r = await client.post("/_strangler/api/unkill", json=KILL, headers=AUTH)
    assert r.status_code == 200
    assert (r.json()["cleared"], r.json()["previous"]) == (False, None)
    assert len(store.audit_log(100)) == audited


async def test_a_kill_the_control_plane_refuses_is_a_409_with_its_reason(
    make_app: AppFactory, store: ControlStore,
) -> None:
    # the proxy's rules know a funnel that the store's active rules do not (yet)
    ahead = load_rules_text(RULES_TEXT.replace("warranties", "accessories"), "2")
    async with admin_client(make_app(rules=ahead)) as client:
        r = await client.post("/_strangler/api/kill", json={**KILL, "funnel": "accessories"},
                              headers=AUTH)
    assert is_problem(r, 409, "conflict")
    assert "no funnel named 'accessories'" in r.json()["detail"]
    assert store.kill_switches() == {}


@pytest.mark.parametrize(("query", "status", "slug"), [
    ("", 422, "unknown-funnel"), ("?funnel=", 422, "unknown-funnel"),
    ("?funnel=nope", 404, "unknown-funnel"),
    ("?funnel=warranties&minutes=x", 422, "invalid-request"),
])
async def test_bad_series_requests_are_problems(client: httpx.AsyncClient, query: str,
                                                status: int, slug: str) -> None:
    r = await client.get("/_strangler/api/series" + query, headers=AUTH)
    assert is_problem(r, status, slug)


@pytest.mark.parametrize(("content", "headers", "status", "slug"), [
    (b'{"reason": "x"}', {"Content-Type": "text/plain"}, 415, "unsupported-media-type"),
    (b'{"reason": "x"}', {}, 415, "unsupported-media-type"),
    (b"{oops", JSON, 400, "bad-request"),
    (b" " * 20_000, JSON, 413, "body-too-large"),
    (b'{"funnel": "nope", "reason": "x"}', JSON, 422, "invalid-request"),
])
async def test_bad_kill_requests_are_problems_and_change_nothing(
    client: httpx.AsyncClient, store: ControlStore, content: bytes,
    headers: dict[str, str], status: int, slug: str,
) -> None:
    r = await client.post("/_strangler/api/kill", content=content, headers={**AUTH, **headers})
    assert is_problem(r, status, slug), r.text
    assert store.kill_switches() == {}


async def test_a_kill_body_that_does_not_arrive_is_408(make_app: AppFactory) -> None:
    app = make_app(body_idle_timeout=0.05)
    sent: list[dict[str, Any]] = []

    async def stalled() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/_strangler/api/kill", "raw_path": b"/_strangler/api/kill",
        "query_string": b"", "root_path": "", "server": ("127.0.0.1", 9090),
        "client": ("127.0.0.1", 5000),
        "headers": [(b"authorization", f"Bearer {TOKEN}".encode()),
                    (b"content-type", b"application/json"), (b"content-length", b"20")],
    }
    await asyncio.wait_for(app(scope, stalled, send), 5)
    assert sent[0]["status"] == 408
    assert json.loads(sent[1]["body"])["type"].endswith("/request-timeout")


# -- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/_strangler/api/status", "/_strangler/api/audit",
                                  "/_strangler/api/rollouts", "/_strangler/api/guardrails"])
async def test_an_unavailable_store_is_503_with_retry_after(
    make_app: AppFactory, tmp_path: Path, path: str,
) -> None:
    closed = open_store(None, str(tmp_path / "closed.sqlite3"))
    closed.close()  # every call now raises StoreUnavailable
    async with admin_client(make_app(control_store=closed)) as client:
        r = await client.get(path, headers=AUTH)
    assert is_problem(r, 503, "store-unavailable")
    assert r.headers["retry-after"] == "1"


async def test_an_unavailable_store_refuses_a_kill_with_503(
    make_app: AppFactory, tmp_path: Path,
) -> None:
    closed = open_store(None, str(tmp_path / "closed.sqlite3"))
    closed.close()
    async with admin_client(make_app(control_store=closed)) as client:
        r = await client.post("/_strangler/api/kill", json=KILL, headers=AUTH)
    assert is_problem(r, 503, "store-unavailable") and r.headers["retry-after"] == "1"


async def test_an_unexpected_error_is_a_500_problem_then_raised_for_the_server(
    make_app: AppFactory,
) -> None:
    app = make_app(telemetry=BrokenTelemetry())
    async with admin_client(app, raise_errors=False) as client:
        r = await client.get("/_strangler/api/series?funnel=warranties", headers=AUTH)
    assert is_problem(r, 500, "internal-error")
    assert r.json()["detail"] == "see the proxy's log" and "broken" not in r.text
    async with admin_client(app) as client:
        with pytest.raises(RuntimeError, match="telemetry is broken"):
            await client.get("/_strangler/api/series?funnel=warranties", headers=AUTH)
