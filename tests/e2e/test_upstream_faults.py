"""Upstream faults through `strangler serve`: every failure is one line of the proxy's log,
naming the request and its cause, never a traceback; the client gets problem+json when the
response had not started, and a cut connection (a truncated response, never a complete
looking one) when it had."""

from __future__ import annotations

import contextlib
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import RULES
from tests.support.processes import strangler_serve

pytestmark = pytest.mark.e2e

READ_TIMEOUT = 0.5
BIG = 100_000


def _reset(conn: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), not a FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def _hold(conn: socket.socket, stop: threading.Event) -> None:
    stop.wait(READ_TIMEOUT * 10)


Fault = Callable[[socket.socket, threading.Event], None]
# path segment -> (what the upstream does, the status the client gets; None: cut mid-body)
FAULTS: dict[str, tuple[Fault, int | None]] = {
    "close-before-head": (lambda c, s: None, 502),
    "garbage-head": (lambda c, s: c.sendall(b"SMTP READY\r\n\r\n"), 502),
    "status-999": (lambda c, s: c.sendall(
        b"HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\nok"), 502),
    "stall-before-head": (_hold, 504),
    "short-small-body": (lambda c, s: c.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10), 502),
    "reset-mid-body": (lambda c, s: (c.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG + b"x" * 1000),
        time.sleep(0.2), _reset(c)), None),
    "garbage-mid-body": (lambda c, s: (c.sendall(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
        time.sleep(0.2), c.sendall(b"ZZ-not-a-size\r\n"), _hold(c, s)), None),
    "stall-mid-body": (lambda c, s: (c.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG + b"x" * 1000),
        _hold(c, s)), None),
}


class FaultyUpstream:
    """A backend on a raw socket; the last path segment of a request picks its fault. Each
    connection serves one request and is then closed (never reused by the proxy's pool)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port: int = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            name = head.split(b" ", 2)[1].decode().rsplit("/", 1)[-1]
            if name in FAULTS:
                FAULTS[name][0](conn, self.stop)  # else: closed unanswered

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        for thread in self.threads:
            thread.join(5)


@contextlib.contextmanager
def faulty_upstream() -> Iterator[FaultyUpstream]:
    upstream = FaultyUpstream()
    try:
        yield upstream
    finally:
        upstream.close()


def test_each_upstream_fault_is_one_log_line_with_its_cause_and_no_traceback(
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    env = {"STRANGLER_LEGACY_READ_TIMEOUT": str(READ_TIMEOUT),
           "STRANGLER_CORE_READ_TIMEOUT": str(READ_TIMEOUT)}
    seen: dict[str, int | None] = {}
    with faulty_upstream() as upstream, strangler_serve(
            tmp_path, upstream.url, upstream.url, rules, env=env) as proxy:
        start = len(proxy.log_text().splitlines())
        with httpx.Client(base_url=proxy.url, timeout=10) as client:
            for name in FAULTS:
                try:
                    r = client.get(f"/carts/{name}")
                except httpx.HTTPError:  # the response was cut: it had started
                    seen[name] = None
                    continue
                seen[name] = r.status_code
                assert r.headers["content-type"] == "application/problem+json", name
                assert r.headers["x-checkout-backend"] == "legacy", name
            assert client.get("/carts/unknown").status_code == 502  # still serving
        proxy.proc.send_signal(signal.SIGTERM)
        proxy.proc.wait(15)
        lines = [line for line in proxy.log_text().splitlines()[start:] if line.strip()]
    assert seen == {name: status for name, (_, status) in FAULTS.items()}
    text = "\n".join(lines)
    assert "Traceback" not in text, text
    for name in FAULTS:
        mine = [line for line in lines if f"/carts/{name}" in line]
        assert len(mine) == 1, (name, text)
        assert "legacy" in mine[0], mine[0]
    # nothing else (no uvicorn "ASGI callable returned without completing response"): one
    # line per fault, and one for the last request
    assert len(lines) == len(FAULTS) + 1, text
