"""Trust at the edge, through `strangler serve`: forwarded-for chains, client-sent decision
headers, the QA override and the admin port with its token."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import run_cli
from tests.integration.conftest import RULES
from tests.support.processes import ProxyProcess, RecordingBackend, strangler_serve, wait_until
from tests.support.servers import free_port, serve

pytestmark = pytest.mark.e2e

# Fixed per run of the suite (the parameters name them, and pytest-xdist workers must collect
# the same tests), never guessable across runs: seeded from the session's start.
_RUN = hashlib.sha256(f"{os.getppid()}:{os.environ.get('PYTEST_XDIST_TESTRUNUID', '')}"
                      .encode()).hexdigest()[:32]
SECRET = "qa-" + _RUN
ADMIN_TOKEN = "admin-" + _RUN[::-1]
DE = {"X-Checkout-Funnel": "warranties", "X-Country": "DE"}  # de-none: 0 % -> legacy
IE = {"X-Checkout-Funnel": "warranties", "X-Country": "IE"}  # ie-all: 100 % -> core


@dataclass
class Edge:
    proxy: ProxyProcess
    core: RecordingBackend
    legacy: RecordingBackend
    tmp: Path

    def client(self, source: str = "127.0.0.1") -> httpx.Client:
        transport = httpx.HTTPTransport(local_address=source)
        return httpx.Client(base_url=self.proxy.url, transport=transport, timeout=5)

    def headers_seen(self, backend: str) -> list[tuple[str, str]]:
        return (self.core if backend == "core" else self.legacy).arrived[-1]["headers"]

    def arrivals(self) -> int:
        return len(self.core.arrived) + len(self.legacy.arrived)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("trust")
    rules = tmp / "rules.yaml"
    rules.write_text(RULES)
    core, legacy = RecordingBackend("core"), RecordingBackend("legacy")
    env = {"STRANGLER_TRUSTED_PROXIES": '["127.0.0.2/32"]',
           "STRANGLER_QA_OVERRIDE_SECRET": SECRET}
    with serve(core) as c, serve(legacy) as lg, strangler_serve(
        tmp, c.url, lg.url, rules, env=env, admin_port=free_port(), admin_token=ADMIN_TOKEN,
    ) as proxy:
        yield Edge(proxy, core, legacy, tmp)


def values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k == name]


def test_forwarded_for_from_an_untrusted_peer_is_replaced(edge: Edge) -> None:
    with edge.client("127.0.0.1") as client:
        r = client.get("/carts", headers={**DE, "X-Forwarded-For": "6.6.6.6",
                                          "X-Forwarded-Proto": "https",
                                          "X-Forwarded-Host": "evil.example"})
    seen = edge.headers_seen(r.headers["x-checkout-backend"])
    assert values(seen, "x-forwarded-for") == ["127.0.0.1"]
    assert values(seen, "x-forwarded-proto") == ["http"]
    assert values(seen, "x-forwarded-host") == [f"127.0.0.1:{edge.proxy.port}"]


def test_forwarded_for_from_a_trusted_proxy_is_kept_and_extended(edge: Edge) -> None:
    with edge.client("127.0.0.2") as client:
        r = client.get("/carts", headers={**DE, "X-Forwarded-For": "203.0.113.7",
                                          "X-Forwarded-Proto": "https"})
    seen = edge.headers_seen(r.headers["x-checkout-backend"])
    assert values(seen, "x-forwarded-for") == ["203.0.113.7, 127.0.0.2"]
    assert values(seen, "x-forwarded-proto") == ["https"]


def test_decision_and_backend_headers_sent_by_clients_are_discarded(edge: Edge) -> None:
    with edge.client() as client:
        r = client.get("/carts", headers={**DE, "X-Checkout-Backend": "core",
                                          "X-Checkout-Decision": "OWNER; forged"})
    assert r.headers.get_list("x-checkout-backend") == ["legacy"]
    assert r.headers.get_list("x-checkout-decision")[0].startswith("RULE; rule=de-none")
    names = [k for k, _ in edge.headers_seen("legacy")]
    assert "x-checkout-backend" not in names and "x-checkout-decision" not in names


def force(backend: str, token: str | None) -> dict[str, str]:
    headers = {"X-Checkout-Force": backend}
    if token is not None:
        headers["X-Checkout-Force-Token"] = token
    return headers


@pytest.mark.parametrize(("country", "forced", "expected"), [
    (DE, "core", "core"), (IE, "legacy", "legacy"),
])
def test_the_qa_override_with_the_secret_forces_the_backend(
    edge: Edge, country: dict[str, str], forced: str, expected: str,
) -> None:
    with edge.client() as client:
        r = client.post("/carts", headers={**country, **force(forced, SECRET)})
    assert r.headers["x-checkout-backend"] == expected
    assert r.headers["x-checkout-decision"] == "RULE; rule=qa-override; rules=1"
    names = [k for k, _ in edge.headers_seen(expected)]
    assert "x-checkout-force" not in names and "x-checkout-force-token" not in names


@pytest.mark.parametrize("token", [None, "", "wrong", SECRET + "x", SECRET[:-1]])
def test_the_qa_override_without_the_right_token_is_ignored_and_stripped(
    edge: Edge, token: str | None,
) -> None:
    with edge.client() as client:
        r = client.post("/carts", headers={**DE, **force("core", token)})
    assert r.headers["x-checkout-backend"] == "legacy"
    assert r.headers["x-checkout-decision"].startswith("RULE; rule=de-none")
    names = [k for k, _ in edge.headers_seen("legacy")]
    assert "x-checkout-force" not in names and "x-checkout-force-token" not in names


def test_the_owner_of_a_named_id_beats_the_qa_override(edge: Edge) -> None:
    with edge.client() as client:
        r = client.get("/carts/lg_cart_1", headers={**IE, **force("core", SECRET)})
    assert r.headers["x-checkout-backend"] == "legacy"
    assert r.headers["x-checkout-decision"].startswith("OWNER")


# -- the admin port -------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/metrics", "/_strangler/healthz", "/_strangler/state", "//metrics", "/x/../metrics",
    "/_strangler/../_strangler/state", "/%2Fmetrics", "/_strangler/api/status",
])
def test_the_main_port_serves_no_admin_path(edge: Edge, path: str) -> None:
    before = edge.arrivals()
    r = httpx.get(edge.proxy.url + path,
                  headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 404
    assert "strangler_requests_total" not in r.text and "kill_switches" not in r.text
    assert edge.arrivals() == before  # not forwarded either


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {ADMIN_TOKEN}",
                                           "Bearer", f"Bearer {ADMIN_TOKEN}x"])
def test_the_admin_port_needs_the_token(edge: Edge, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for path in ("/metrics", "/_strangler/healthz", "/_strangler/state"):
        r = httpx.get(edge.proxy.admin_url + path, headers=headers)
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert "strangler_" not in r.text


def test_the_admin_port_serves_admin_paths_with_the_token_and_nothing_else(edge: Edge) -> None:
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    metrics = httpx.get(edge.proxy.admin_url + "/metrics", headers=auth)
    assert metrics.status_code == 200 and "strangler_requests_total" in metrics.text
    health = httpx.get(edge.proxy.admin_url + "/_strangler/healthz", headers=auth)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    before = edge.arrivals()
    assert httpx.get(edge.proxy.admin_url + "/carts", headers=auth).status_code == 404
    assert edge.arrivals() == before


def test_the_kill_switch_beats_the_qa_override(edge: Edge) -> None:
    db = edge.tmp / f"control-{edge.proxy.port}.sqlite3"

    def cli(*args: str) -> None:
        run_cli(*args, "--db-path", str(db), data_dir=edge.tmp)

    cli("kill", "--funnel", "warranties", "--reason", "drill")
    try:
        def killed() -> bool:
            with edge.client() as client:
                r = client.post("/carts", headers={**DE, **force("core", SECRET)})
            return r.headers["x-checkout-decision"].startswith("KILL_SWITCH")
        wait_until(killed, 5, "the kill switch")
        with edge.client() as client:
            r = client.post("/carts", headers={**DE, **force("core", SECRET)})
        assert r.headers["x-checkout-backend"] == "legacy"
    finally:
        cli("unkill", "--funnel", "warranties", "--reason", "drill over")
