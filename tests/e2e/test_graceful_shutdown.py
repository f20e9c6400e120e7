"""SIGTERM drains `strangler serve`: the request in flight completes, new connections are
refused at once, and the process exits cleanly; `strangler up` stops its backends too."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import RULES
from tests.support.processes import (
    REPO,
    clean_env,
    http_ok,
    stop,
    strangler_cmd,
    strangler_serve,
    wait_until,
)
from tests.support.servers import free_port, serve

pytestmark = pytest.mark.e2e

SLOW_SECONDS = 1.0


class SlowBackend:
    """Answers every request after SLOW_SECONDS; `started` is set when one arrives."""

    def __init__(self) -> None:
        self.started = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.started.set()
        await asyncio.sleep(SLOW_SECONDS)
        body = b"slow but complete " * 1000
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except (ConnectionRefusedError, TimeoutError):
        return True
    return False


def test_sigterm_lets_the_request_in_flight_finish_and_refuses_new_connections(
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    backend = SlowBackend()
    result: dict[str, Any] = {}

    def slow_request(url: str) -> None:
        r = httpx.get(url + "/carts", headers={"X-Country": "DE"}, timeout=10)
        result.update(status=r.status_code, size=len(r.content), done=time.monotonic())

    with serve(backend) as upstream, strangler_serve(
        tmp_path, upstream.url, upstream.url, rules) as proxy:
        client = threading.Thread(target=slow_request, args=(proxy.url,))
        client.start()
        assert backend.started.wait(5)
        proxy.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        wait_until(lambda: refused(proxy.port), 0.8, "the listener to close")
        assert "done" not in result  # refused while the slow request was still running
        client.join(10)
        assert result["status"] == 200
        assert result["size"] == len(b"slow but complete " * 1000)
        assert result["done"] - signalled < SLOW_SECONDS + 1
        # uvicorn re-raises the signal it captured once the drain is over
        assert proxy.proc.wait(10) in (0, -signal.SIGTERM)
        assert "Traceback" not in proxy.log_text()


def test_sigterm_to_strangler_up_stops_the_backends_it_started(tmp_path: Path) -> None:
    while (port := free_port()) > 65000:  # the proxy, core and legacy take three ports
        pass
    log = tmp_path / "up.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*strangler_cmd(), "up", "--port", str(port), "--data-dir", str(tmp_path),
             "--legacy-latency-ms", "0"], stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            env=clean_env())
    try:
        wait_until(lambda: proc.poll() is not None or http_ok(
            f"http://127.0.0.1:{port}/_strangler/healthz"), 30, "strangler up")
        assert all(not refused(p) for p in (port, port + 1, port + 2))
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        wait_until(lambda: all(refused(p) for p in (port, port + 1, port + 2)), 5,
                   "the core and the legacy stub to stop with the proxy")
    finally:
        stop(proc)
