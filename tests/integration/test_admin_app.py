"""The admin app behind a running proxy: which requests reach it, and how its failures end."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from guardrails.model import FunnelWindow
from guardrails.telemetry import MemoryTelemetry
from proxy.app import ProxyApp
from proxy.config import ProxySettings
from proxy.main import UVICORN_OPTIONS
from proxy.runtime import ProxyRuntime
from tests.integration.conftest import RULES
from tests.support.servers import free_port, serve


class BrokenWindows(MemoryTelemetry):
    """Telemetry that records, but cannot answer a window."""

    def window(self, funnel: str, since: float, until: float) -> FunnelWindow:
        raise RuntimeError("windows are broken")


def raw_get(port: int, target: str, headers: str = "") -> tuple[int, bytes]:
    """Status and whole response of `GET target` sent as is (httpx would resolve `..`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: admin\r\n{headers}"
                     "Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


@pytest.fixture
def broken_proxy(tmp_path: Path) -> Iterator[str]:
    """A proxy (no admin port, no token) whose telemetry fails every read."""
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES)
    nowhere = f"http://127.0.0.1:{free_port()}"
    settings = ProxySettings(core_url=nowhere, legacy_url=nowhere, rules_file=str(rules_file),
                             db_path=str(tmp_path / "control.sqlite3"), poll_interval=0.1,
                             guard_interval=3600)
    app = ProxyApp(ProxyRuntime(settings, telemetry=BrokenWindows(10)))
    with serve(app, **UVICORN_OPTIONS) as server:
        yield server.url


@pytest.mark.parametrize(("path", "status"), [
    ("//metrics", 200), ("/x/../metrics", 200), ("/%2Fmetrics", 200),
    ("/_strangler/./state", 200), ("//_strangler//healthz", 200),
    ("//dashboard", 200), ("/x/../dashboard/dashboard.js", 200),
    ("/_strangler/../_strangler/api/config", 200), ("/_strangler/nothing/..", 404),
])
def test_admin_paths_in_any_spelling_reach_the_admin_app(make_stack, path: str,
                                                         status: int) -> None:
    stack = make_stack()
    got, response = raw_get(stack.proxy.port, path)
    assert got == status, response
    assert b"x-checkout-backend" not in response.lower()  # not forwarded
    assert stack.legacy_app.requests == [] and stack.core_app.requests == []


@pytest.mark.parametrize("path", [
    "/dashboard/../metrics", "/dashboard/../_strangler/api/status", "//dashboard/..//metrics",
    "/dashboard/%2E%2E/_strangler/state",
])
def test_the_page_is_no_way_around_the_token(make_stack, path: str) -> None:
    stack = make_stack(admin_token="tok-page")
    status, response = raw_get(stack.proxy.port, path)
    assert status == 401 and b'www-authenticate: Bearer realm="strangler"' in response
    assert b"strangler_" not in response and b"kill_switches" not in response
    ok, _ = raw_get(stack.proxy.port, path, "Authorization: Bearer tok-page\r\n")
    assert ok == 200


def test_an_unexpected_admin_error_is_a_500_logged_once(broken_proxy: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="strangler")
    series = "/_strangler/api/series?funnel=warranties"
    with httpx.Client(base_url=broken_proxy) as client:
        deadline = time.monotonic() + 5
        while (r := client.get(series)).status_code == 404 and time.monotonic() < deadline:
            time.sleep(0.05)  # until the rules are loaded
        assert r.status_code == 500
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"] == "see the proxy's log" and "broken" not in r.text
        assert client.get("/_strangler/healthz").status_code == 200  # the proxy serves on
    logged = [rec for rec in caplog.records if rec.exc_info and "windows are broken" in str(
        rec.exc_info[1])]
    assert len(logged) == 1
    assert logged[0].getMessage() == "admin request GET /_strangler/api/series failed"
