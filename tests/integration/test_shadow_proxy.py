"""Shadow parity through the proxy: legacy serves every customer, the proxy mirrors their cart
building to the real checkout core after legacy's answer went out, and compares.

Real servers on real sockets: the legacy stub and the checkout core (in-process apps, each
on its own port), the proxy app under uvicorn, a SQLite control store. The core is wrapped
by a recorder that sees every request it gets.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.config import ProxySettings
from proxy.main import UVICORN_OPTIONS, create_app
from shadow.report import read_summary
from tests.support.checkout_contract import ADDRESS, VISA, core_app, legacy_app
from tests.support.processes import wait_until
from tests.support.servers import serve

SHADOW = """\
schema: 1
funnels:
  - name: hardware
    match: {header: hardware}
    salt: hw-shadow
    shadow: {share: 100}
    rules:
      - {id: all-legacy, countries: '*', percent: 0}
"""
NO_SHADOW = SHADOW.replace("    shadow: {share: 100}\n", "")
HEADERS = {"X-Checkout-Funnel": "hardware", "X-Country": "DE"}


@dataclass
class Recorder:
    """ASGI wrapper: every request the core received (method, path, headers)."""

    app: Any
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.seen.append((scope["method"], scope["path"], {
                k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}))
        await self.app(scope, receive, send)


@dataclass
class Stack:
    url: str
    app: Any
    core: Recorder


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    with ExitStack() as es:
        def build(rules: str, **settings: Any) -> Stack:
            work = tmp_path / uuid.uuid4().hex[:8]
            work.mkdir()
            legacy = es.enter_context(serve(legacy_app(work)))
            core = Recorder(core_app(work))
            core_server = es.enter_context(serve(core))
            rules_file = work / "rules.yaml"
            rules_file.write_text(rules)
            app = create_app(ProxySettings(
                core_url=core_server.url, legacy_url=legacy.url, rules_file=str(rules_file),
                db_path=str(work / "control.sqlite3"), poll_interval=0.1, guard_interval=0.2,
                trust_country_headers="always", malloc_tuning=False, **settings))
            proxy = es.enter_context(serve(app, **UVICORN_OPTIONS))
            return Stack(proxy.url, app, core)

        yield build


def shop(url: str) -> list[httpx.Response]:
    """One customer builds a cart, checks out and pays; every answer it got."""
    out: list[httpx.Response] = []
    session = {"X-Checkout-Session": f"shadow-{uuid.uuid4().hex}"}
    with httpx.Client(base_url=url, headers={**HEADERS, **session}, timeout=30) as client:
        def call(method: str, path: str, body: Any = None, **kw: Any) -> httpx.Response:
            response = client.request(method, path, json=body, **kw)
            out.append(response)
            return response

        cart = call("POST", "/carts", {"country": "DE", "currency": "EUR"}).json()
        call("POST", f"/carts/{cart['id']}/items", {"sku": "HW-LAPTOP-14", "quantity": 1})
        call("POST", f"/carts/{cart['id']}/items", {"sku": "AC-CASE-6", "quantity": 2})
        call("PATCH", f"/carts/{cart['id']}/items/AC-CASE-6", {"quantity": 3})
        call("GET", f"/carts/{cart['id']}")
        checkout = call("POST", f"/carts/{cart['id']}/checkout",
                        {"email": "ada@example.com", "shipping_address": ADDRESS}).json()
        call("POST", f"/checkouts/{checkout['id']}/orders", VISA,
             headers={"Idempotency-Key": f"key-{uuid.uuid4().hex}"})
    return out


IDS = re.compile(rb"(lg|pay)_[A-Za-z0-9_]+")
TIMES = re.compile(rb"\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d)?")


def normalised(r: httpx.Response) -> tuple[int, list[str], bytes]:
    """A response with what differs between two customers (ids, times) taken out."""
    names = sorted(k for k in r.headers if k not in ("date", "content-length", "set-cookie"))
    return r.status_code, names, TIMES.sub(b"T", IDS.sub(b"ID", r.content))


def test_legacy_customers_are_mirrored_to_the_core_and_compared(make_stack) -> None:
    stack = make_stack(SHADOW)
    answers = shop(stack.url)
    assert [r.status_code for r in answers] == [201, 201, 201, 200, 200, 201, 201]
    assert {r.headers["x-checkout-backend"] for r in answers} == {"legacy"}
    rt = stack.app.rt

    def compared() -> dict[str, Any] | None:
        stats = rt.mirror.stats()
        return stats if stats["compared"] + sum(stats["dropped"].values()) >= 6 else None

    stats = wait_until(compared, 30, "the mirror compared the cart building")
    assert stats["compared"] == 6 and stats["mismatched"] == 0 and not stats["dropped"]
    # what reached the core: the six cart-building requests, marked, with core ids
    shadow = [(m, p, h) for m, p, h in stack.core.seen if p.startswith(("/carts", "/checkouts"))]
    assert [m for m, _, _ in shadow] == ["POST", "POST", "POST", "PATCH", "GET", "POST"]
    assert all(h.get("x-checkout-shadow") == "1" for _, _, h in shadow)
    assert all("lg_" not in p for _, p, _ in shadow)
    assert not any("/orders" in p for _, p, _ in stack.core.seen), "no order from the shadow"
    assert all("cookie" not in h for _, _, h in shadow)
    # the figures: metrics, and the summary every reader uses once the monitor stored it
    metrics = httpx.get(stack.url + "/metrics").text
    assert re.search(r'strangler_shadow_comparisons_total\{funnel="hardware",'
                     r'result="match",route="POST /carts"\} 1\.0', metrics)

    def stored() -> dict[str, Any] | None:
        summary = read_summary(rt.store)
        funnel = summary.get("funnels", {}).get("hardware")
        return summary if funnel and funnel.get("units", {}).get("compared") else None

    summary = wait_until(stored, 30, "the shadow summary in the control store")
    assert json.dumps(summary)  # JSON-ready for the CLI and the dashboard


def test_the_customer_gets_the_same_answers_with_the_shadow_on_or_off(make_stack) -> None:
    on, off = make_stack(SHADOW), make_stack(NO_SHADOW)
    with_shadow, without = shop(on.url), shop(off.url)
    assert [normalised(r) for r in with_shadow] == [normalised(r) for r in without]
    assert off.app.rt.mirror.stats()["submitted"] == 0
    assert not [p for _, p, _ in off.core.seen if p.startswith("/carts")]


def test_a_client_cannot_mark_its_own_request_as_shadow_traffic(make_stack) -> None:
    stack = make_stack(NO_SHADOW.replace("percent: 0", "percent: 100"))
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        r = client.post("/carts", json={"country": "DE", "currency": "EUR"},
                        headers={**HEADERS, "X-Checkout-Shadow": "1"})
    assert r.status_code == 201 and r.headers["x-checkout-backend"] == "core"
    assert [h.get("x-checkout-shadow") for m, p, h in stack.core.seen if p == "/carts"] == [None]


@pytest.mark.redis
def test_two_replicas_sharing_redis_map_one_customers_ids(tmp_path: Path,
                                                          redis_clean_url: str) -> None:
    # a load balancer without affinity: the customer's requests alternate between two
    # replicas; the cart the first one mirrored must be found by the second (the id map
    # lives in Redis), and the report pools both
    from control.store import open_store

    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(SHADOW)
    open_store(redis_clean_url, "", create=True).close()
    with ExitStack() as es:
        legacy = es.enter_context(serve(legacy_app(tmp_path)))
        core = Recorder(core_app(tmp_path))
        core_server = es.enter_context(serve(core))
        apps, urls = [], []
        for i in range(2):
            app = create_app(ProxySettings(
                core_url=core_server.url, legacy_url=legacy.url, rules_file=str(rules_file),
                redis_url=redis_clean_url, db_path=str(tmp_path / f"unused-{i}.sqlite3"),
                poll_interval=0.1, guard_interval=0.2, trust_country_headers="always",
                malloc_tuning=False, state_cache=""))
            apps.append(app)
            urls.append(es.enter_context(serve(app, **UVICORN_OPTIONS)).url)
        session = {**HEADERS, "X-Checkout-Session": f"two-{uuid.uuid4().hex}"}
        clients = [es.enter_context(httpx.Client(base_url=u, headers=session, timeout=30))
                   for u in urls]
        cart = clients[0].post("/carts", json={"country": "DE", "currency": "EUR"}).json()
        wait_until(lambda: apps[0].rt.mirror.stats()["compared"] == 1, 30, "the cart mirrored")
        r = clients[1].post(f"/carts/{cart['id']}/items",
                            json={"sku": "HW-LAPTOP-14", "quantity": 1})
        assert r.status_code == 201 and r.headers["x-checkout-backend"] == "legacy"
        stats = wait_until(
            lambda: (s := apps[1].rt.mirror.stats())["compared"] + sum(s["dropped"].values())
            and s, 30, "the item mirrored by the other replica")
        assert (stats["compared"], stats["mismatched"], stats["dropped"]) == (1, 0, {})
        items = [p for m, p, _ in core.seen if m == "POST" and p.endswith("/items")]
        assert len(items) == 1 and items[0].startswith("/carts/co_")
        # each replica flushes its figures to the shared report every second
        summary = wait_until(
            lambda: (s := apps[0].rt.shadow_report.summary())["funnels"].get("hardware", {})
            .get("comparisons", 0) >= 2 and s, 30, "both replicas' figures in the report")
        assert summary["funnels"]["hardware"]["mismatches"] == 0


def test_a_queued_job_keeps_only_the_headers_it_replays(make_stack) -> None:
    # the mirror's queue holds what the replay needs, never a customer's cookies: a queue of
    # jobs with 24 KB request heads would otherwise cost hundreds of MB a replica
    stack = make_stack(SHADOW)
    mirror = stack.app.rt.mirror
    kept: list[Any] = []
    submit = mirror.submit
    mirror.submit = lambda job: kept.append(job) or submit(job)  # type: ignore[method-assign]
    cookie = "; ".join(f"c{i}={'v' * 500}" for i in range(48))
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        r = client.post("/carts", json={"country": "DE", "currency": "EUR"},
                        headers={**HEADERS, "Cookie": cookie, "Accept": "application/json"})
    assert r.status_code == 201
    (job,) = kept
    assert {name for name, _ in job.headers} <= {"content-type", "accept",
                                                 "accept-language", "idempotency-key"}
    assert ("accept", "application/json") in job.headers


def test_a_failing_capture_costs_the_customer_nothing(make_stack, monkeypatch, caplog) -> None:
    stack = make_stack(SHADOW)

    def broken(*_: Any) -> None:
        raise RuntimeError("selection broke")

    monkeypatch.setattr("proxy.app.route_request", broken)
    with httpx.Client(base_url=stack.url, headers=HEADERS, timeout=30) as client:
        answers = [client.post("/carts", json={"country": "DE", "currency": "EUR"})
                   for _ in range(3)]
    assert [r.status_code for r in answers] == [201, 201, 201]
    assert all(r.json()["id"].startswith("lg_") for r in answers)
    assert "was not mirrored" in caplog.text and "selection broke" in caplog.text


def test_the_mirror_takes_its_settings_and_shows_how_busy_the_loop_is(make_stack) -> None:
    stack = make_stack(SHADOW, shadow_max_busy=0.3, shadow_queue=7, shadow_concurrency=2)
    mirror = stack.app.rt.mirror
    assert (mirror.settings.max_busy, mirror.settings.max_queue,
            mirror.settings.concurrency) == (0.3, 7, 2)
    with httpx.Client(base_url=stack.url, headers=HEADERS, timeout=30) as client:
        assert client.post("/carts", json={"country": "DE", "currency": "EUR"}).status_code == 201
    wait_until(lambda: mirror.stats()["compared"] == 1, 30, "the cart mirrored")
    assert 0.0 <= mirror.stats()["loop_busy"] <= 1.0
    busy = [line for line in httpx.get(stack.url + "/metrics").text.splitlines()
            if line.startswith("strangler_shadow_loop_busy ")]
    assert len(busy) == 1 and 0.0 <= float(busy[0].split()[1]) <= 1.0
