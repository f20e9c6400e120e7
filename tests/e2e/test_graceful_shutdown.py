"""SIGTERM drains `strangler serve`: the request in flight completes, new connections are
refused at once, and the process exits cleanly; `strangler up` stops its backends too.

No fixed delays: the request in flight is held by the backend until the test has seen the
listener closed, and `strangler up`'s backends are known by process, not by port."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import RULES
from tests.support.backends import HeldBackend
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

BODY = b"slow but complete " * 1000


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
    backend = HeldBackend(BODY)
    result: dict[str, Any] = {}

    def slow_request(url: str) -> None:
        r = httpx.get(url + "/carts", headers={"X-Country": "DE"}, timeout=60)
        result.update(status=r.status_code, size=len(r.content))

    with serve(backend) as upstream, strangler_serve(
        tmp_path, upstream.url, upstream.url, rules) as proxy:
        client = threading.Thread(target=slow_request, args=(proxy.url,))
        client.start()
        assert backend.started.wait(10)
        proxy.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: refused(proxy.port), 10, "the listener to close")
        assert proxy.proc.poll() is None and "status" not in result  # still draining
        backend.release.set()
        client.join(30)
        assert result["status"] == 200
        assert result["size"] == len(BODY)
        # uvicorn re-raises the signal it captured once the drain is over
        assert proxy.proc.wait(30) in (0, -signal.SIGTERM)
        assert "Traceback" not in proxy.log_text()


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def start_up(tmp_path: Path, attempts: int = 5) -> subprocess.Popen[bytes]:
    """`strangler up` on PORT (core on PORT+1, legacy on PORT+2): three ports free when it
    starts. Another process may take one meanwhile; then up exits and we try elsewhere."""
    for _ in range(attempts):
        port = free_port()
        if port < 65000 and all(_bindable(p) for p in (port + 1, port + 2)):
            proc = _up(tmp_path, port)
            if proc.poll() is None:
                return proc
    raise AssertionError(f"strangler up did not start in {attempts} attempts")


def _up(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    """`strangler up --port PORT`, once healthy or exited."""
    with (tmp_path / f"up-{port}.log").open("ab") as out:
        proc = subprocess.Popen(
            [*strangler_cmd(), "up", "--port", str(port), "--data-dir", str(tmp_path),
             "--legacy-latency-ms", "0"], stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            env=clean_env())
    wait_until(lambda: proc.poll() is not None or http_ok(
        f"http://127.0.0.1:{port}/_strangler/healthz"), 60, "strangler up")
    return proc


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_sigterm_to_strangler_up_stops_the_backends_it_started(tmp_path: Path) -> None:
    proc = start_up(tmp_path)
    try:
        backends = {pid: cmdline(pid) for pid in children(proc.pid)}
        names = sorted(n for n in ("checkout_core", "legacy_stub")
                       if any(f"-m {n} " in line for line in backends.values()))
        assert names == ["checkout_core", "legacy_stub"], backends
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        wait_until(lambda: not any(alive(pid) for pid in backends), 20,
                   "the core and the legacy stub to stop with the proxy")
    finally:
        stop(proc)
