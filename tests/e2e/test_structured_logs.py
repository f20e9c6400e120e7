"""`--log-format json`: every line the proxy, the checkout core and the legacy stub write is
one JSON object (timestamp, level, logger, message, fields); the proxy's access log
(STRANGLER_ACCESS_LOG) is off by default and, when on, one line per proxied request with
the decision. Real processes, their whole output read back."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import spawn_up
from tests.integration.conftest import RULES
from tests.support.backends import EchoBackend
from tests.support.processes import (
    Process,
    backend_process,
    clean_env,
    raw_exchange,
    status_of,
    stop,
    strangler_serve,
    wait_until,
)
from tests.support.servers import free_port, serve

pytestmark = pytest.mark.e2e

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
IE = {"X-Checkout-Funnel": "warranties", "X-Country": "IE"}  # rule ie-all: 100 % core
TOKEN = "tok-logs"
ACCESS_FIELDS = {"method", "path", "status", "duration_ms", "backend", "reason", "rule",
                 "rules_version", "funnel", "trace_id"}


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of `text` as a JSON object with the required keys (asserted)."""
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        record = json.loads(line)  # a line that is not JSON fails here, and names itself
        assert isinstance(record, dict), line
        assert {"timestamp", "level", "logger", "message"} <= set(record), line
        stamp = datetime.strptime(record["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert stamp.year >= 2024, line
        assert record["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}, line
        records.append(record)
    return records


def access_lines(log: str) -> list[dict[str, Any]]:
    return [r for r in json_lines(log) if r["logger"] == "strangler.access"]


def test_the_proxy_logs_json_and_an_access_line_per_request(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    admin_port = free_port()
    env = {"STRANGLER_LOG_FORMAT": "json", "STRANGLER_ACCESS_LOG": "on",
           "STRANGLER_LOG_LEVEL": "info"}
    with serve(EchoBackend("core")) as core, serve(EchoBackend("legacy")) as legacy, \
            strangler_serve(tmp_path, core.url, legacy.url, rules, env=env,
                            admin_port=admin_port, admin_token=TOKEN) as proxy:
        r = httpx.post(proxy.url + "/carts", headers={
            **IE, "X-Checkout-Session": "u-logs-1", "traceparent": TRACEPARENT})
        assert r.status_code == 201 and r.headers["x-checkout-backend"] == "core"
        httpx.get(proxy.url + "/carts/lg_abc", headers={"X-Checkout-Session": "u-logs-2"})
        # the probes: on the admin port, without the token; not on the public port
        assert httpx.get(proxy.admin_url + "/livez").json() == {"status": "ok"}
        assert httpx.get(proxy.admin_url + "/readyz").json() == {"status": "ready"}
        assert httpx.get(proxy.url + "/readyz").status_code == 404
        assert httpx.get(proxy.admin_url + "/_strangler/state").status_code == 401
        wait_until(lambda: len(access_lines(proxy.log_text())) >= 2, 10, "two access lines")
    records = json_lines(proxy.log_text())
    loggers = {r["logger"] for r in records}
    assert {"uvicorn.error", "strangler.access"} <= loggers
    first, second = access_lines(proxy.log_text())
    assert ACCESS_FIELDS <= set(first)
    assert first["method"] == "POST" and first["path"] == "/carts"
    assert first["status"] == 201 and first["backend"] == "core"
    assert first["reason"] == "RULE" and first["rule"] == "ie-all"
    assert first["rules_version"] == "1" and first["funnel"] == "warranties"
    assert first["trace_id"] == TRACE_ID
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] > 0
    assert second["reason"] == "OWNER" and second["backend"] == "legacy"
    assert second["rule"] is None and second["trace_id"] is None
    assert second["funnel"] == "-"


def test_the_access_log_is_off_by_default(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    env = {"STRANGLER_LOG_FORMAT": "json", "STRANGLER_LOG_LEVEL": "info"}
    with serve(EchoBackend("core")) as core, serve(EchoBackend("legacy")) as legacy, \
            strangler_serve(tmp_path, core.url, legacy.url, rules, env=env) as proxy:
        for i in range(20):
            r = httpx.post(proxy.url + "/carts", headers={**IE, "X-Checkout-Session": f"u{i}"})
            assert r.status_code == 201
        # a request the server logs a line for: once that line is there, the lines of the
        # requests before it would be too
        status, _ = raw_exchange(proxy.port, b"POST /carts HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert status_of(status) == 400
        wait_until(lambda: "rejected a request with 400" in proxy.log_text(), 10, "the marker")
    records = json_lines(proxy.log_text())
    assert [r for r in records if r["logger"] == "strangler.access"] == []
    assert not [r for r in records if "/carts" in r["message"] and r["level"] == "INFO"]


@pytest.mark.parametrize("module", ["checkout_core", "legacy_stub"])
def test_the_backends_log_json(tmp_path: Path, module: str) -> None:
    env = {"CHECKOUT_CORE_DB_PATH": str(tmp_path / "core.sqlite3")}
    with backend_process(module, tmp_path, env=env, args=["--log-format", "json"]) as backend:
        assert httpx.post(backend.url + "/carts",
                          json={"country": "IE", "currency": "EUR"}).status_code == 201
        wait_until(lambda: _access(backend), 10, "the backend's access line")
    records = json_lines(backend.log_text())
    assert {"uvicorn.error", "uvicorn.access"} <= {r["logger"] for r in records}
    [cart] = [r for r in records if r["logger"] == "uvicorn.access" and r["path"] == "/carts"]
    assert (cart["method"], cart["status"]) == ("POST", 201)
    assert "color_message" not in json.dumps(records)


def _access(backend: Process) -> bool:
    return '"uvicorn.access"' in backend.log_text() and "/carts" in backend.log_text()


def test_backends_take_the_format_from_the_environment(tmp_path: Path) -> None:
    env = {"STRANGLER_LOG_FORMAT": "json"}
    with backend_process("legacy_stub", tmp_path, env=env) as backend:
        pass
    assert json_lines(backend.log_text())


def test_strangler_up_passes_the_format_to_the_core_and_the_stub(tmp_path: Path) -> None:
    log = tmp_path / "up.log"
    proc, port = spawn_up(
        ["--data-dir", str(tmp_path), "--log-format", "json", "--legacy-latency-ms", "5"],
        log, clean_env(STRANGLER_ACCESS_LOG="on"), health="/readyz")
    try:
        r = httpx.post(f"http://127.0.0.1:{port}/carts", headers={"X-Country": "IE"},
                       json={"country": "IE", "currency": "EUR"})
        assert r.status_code == 201
        wait_until(lambda: "strangler.access" in log.read_text(), 10, "the access line")
    finally:
        stop(proc, 20)
    records = json_lines(log.read_text())
    started = {r["message"] for r in records if r["logger"] == "uvicorn.error"
               and r["message"].startswith("Started server process")}
    assert len(started) == 3  # the proxy, the core and the legacy stub, each in JSON
    [banner] = [r for r in records if r["logger"] == "strangler.cli"]
    assert f"http://127.0.0.1:{port + 1}" in banner["message"]
    assert any(r["logger"] == "uvicorn.access" and r.get("path") == "/carts"
               for r in records)  # the backend that served the cart
