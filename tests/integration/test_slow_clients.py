"""Slow clients are the clients' problem: an upload slower than a backend's read timeout is
served, a stalled or abandoned one counts against no backend, and bodies read before an
upstream connection is taken let slow clients hold none."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from control.decision import Backend
from tests.support.processes import status_of

IE = "X-Checkout-Funnel: warranties\r\nX-Country: IE\r\n"  # ie-all: 100 % core
DE = "X-Checkout-Funnel: warranties\r\nX-Country: DE\r\n"  # de-none: 0 % -> legacy
BUFFERED, STREAMED = 1_048_576, 0  # body_buffer_bytes


def eventually(check: Callable[[], Any], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while not (value := check()):
        assert time.monotonic() < deadline, f"not within {within}s: {what}"
        time.sleep(0.05)
    return value


class SlowUpload:
    """A POST on a raw socket whose body leaves one byte every `pause` seconds; `stall_after`
    bytes, then silence (or, with `leave`, the socket is closed)."""

    def __init__(self, port: int, headers: str, body: bytes, pause: float,
                 stall_after: int | None = None, leave: bool = False) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(
            f"POST /carts HTTP/1.1\r\nHost: shop\r\n{headers}Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode())
        self.body, self.pause, self.stall_after, self.leave = body, pause, stall_after, leave
        self.sent_first = threading.Event()
        self.uploaded = threading.Event()  # the last body byte left
        self.response = b""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.sock:
            try:
                for i in range(len(self.body)):
                    if i == self.stall_after:
                        break
                    if i == len(self.body) - 1:
                        self.uploaded.set()  # set first: the proxy may answer at once
                    self.sock.sendall(self.body[i:i + 1])
                    self.sent_first.set()
                    time.sleep(self.pause)
            except OSError:  # answered (and closed) before the body was sent: read why
                pass
            if self.leave:
                return
            while chunk := self._recv():
                self.response += chunk

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(65536)
        except OSError:
            return b""

    def status(self, timeout: float = 30) -> int | None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "no answer"
        return status_of(self.response)


def upstream_errors(url: str) -> list[str]:
    return [line for line in httpx.get(url + "/metrics").text.splitlines()
            if line.startswith("strangler_upstream_errors_total{")]


def core_arm(stack: Any) -> Any:
    """The core arm's telemetry of the warranties funnel over the last minute, once flushed."""
    now = time.time()
    per_country = stack.app.rt.telemetry.countries("warranties", now - 60, now + 1)
    return per_country.get("IE", {}).get("core")


@pytest.mark.parametrize("buffer", [BUFFERED, STREAMED], ids=["buffered", "streamed"])
def test_an_upload_slower_than_the_read_timeout_is_served(make_stack: Any, buffer: int) -> None:
    """Before: the read timer started with the exchange, ran during the upload: 504, and a
    timeout counted against the core."""
    stack = make_stack(core_read_timeout=0.3, body_buffer_bytes=buffer)
    upload = SlowUpload(stack.proxy.port, IE, b'{"n": 1}', pause=0.15)
    assert upload.status() == 201
    assert stack.core_app.requests[-1]["body_len"] == 8
    assert upstream_errors(stack.url) == []


@pytest.mark.parametrize("buffer", [BUFFERED, STREAMED], ids=["buffered", "streamed"])
def test_a_stalled_upload_is_408_and_counts_against_no_backend(
    make_stack: Any, buffer: int,
) -> None:
    """Before: the core's read timeout fired first: 504, upstream error kind=timeout, an
    error in the core's telemetry (its error budget)."""
    stack = make_stack(core_read_timeout=0.3, body_idle_timeout=1.0, body_buffer_bytes=buffer)
    upload = SlowUpload(stack.proxy.port, IE, b'{"n": 1}', pause=0.05, stall_after=2)
    assert upload.status() == 408
    assert upstream_errors(stack.url) == []
    eventually(lambda: stack.app.rt.read_ahead.held == 0, 10, "the read-ahead given back")
    arm = eventually(lambda: core_arm(stack), 10, "the telemetry flush")
    assert (arm.requests, arm.errors) == (1, 0)


def test_a_client_that_leaves_mid_upload_counts_against_no_backend(make_stack: Any) -> None:
    stack = make_stack(core_read_timeout=0.3, body_buffer_bytes=STREAMED)
    upload = SlowUpload(stack.proxy.port, IE, b'{"n": 1}', pause=0.2, stall_after=4, leave=True)
    upload.thread.join(10)
    eventually(lambda: stack.app.rt.read_ahead.held == 0, 10, "nothing held for the gone client")
    arm = eventually(lambda: core_arm(stack), 10, "the outcome of the abandoned request")
    assert (arm.requests, arm.errors) == (1, 0)
    assert upstream_errors(stack.url) == []
    assert 'code="4xx",funnel="warranties",reason="RULE"} 1.0' in httpx.get(
        stack.url + "/metrics").text  # recorded as 499, the client's


def test_slow_uploads_hold_no_upstream_connection(make_stack: Any) -> None:
    """Before: each slow upload held a pooled connection for as long as it lasted; with
    every slot taken, other customers waited for one."""
    stack = make_stack(pool_size=2)
    slow = [SlowUpload(stack.proxy.port, DE, b'{"slow": 1}', pause=0.4) for _ in range(4)]
    for upload in slow:
        assert upload.sent_first.wait(10)
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        for _ in range(5):
            r = client.get("/carts", headers={"X-Checkout-Funnel": "warranties",
                                              "X-Country": "DE"})
            assert r.status_code == 200
            assert not any(u.uploaded.is_set() for u in slow), "served only after a slot freed"
    assert all(upload.status() == 201 for upload in slow)


def test_a_body_over_the_buffer_streams_on_a_connection_taken_at_once(make_stack: Any) -> None:
    stack = make_stack(body_buffer_bytes=4)
    pool = stack.app.rt.upstream(Backend.CORE).pool()
    upload = SlowUpload(stack.proxy.port, IE, b'{"n": 12345}', pause=0.2)
    eventually(lambda: pool.open_connections == 1, 10, "a connection for the streamed body")
    assert not upload.uploaded.is_set()
    assert upload.status() == 201
    assert stack.core_app.requests[-1]["body_len"] == 12


def test_a_buffered_body_is_sent_to_legacy_when_the_core_is_unreachable(make_stack: Any) -> None:
    stack = make_stack(core_up=False)

    def chunks() -> Any:
        yield b'{"a": '
        yield b"1}"

    r = httpx.post(stack.url + "/carts", content=chunks(), headers={
        "X-Checkout-Funnel": "warranties", "X-Country": "IE"})
    assert r.status_code == 201
    assert r.headers["x-checkout-decision"].startswith("FAILOVER; rule=ie-all")
    assert r.json()["body_len"] == 8


def test_an_upstream_that_reads_none_of_a_streamed_body_is_a_504(make_stack: Any) -> None:
    """The read timer now starts after the upload; an upstream that stops reading the body
    is caught by the same timeout (the upload waits for it to drain), never a hang."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    stack = make_stack(core_url=f"http://127.0.0.1:{listener.getsockname()[1]}",
                       core_read_timeout=0.5, body_buffer_bytes=STREAMED,
                       max_body_bytes=64 * 1024 * 1024)
    size = 48 * 1024 * 1024  # far more than the socket buffers between proxy and upstream
    with socket.create_connection(("127.0.0.1", stack.proxy.port), timeout=30) as sock:
        sock.sendall(f"POST /carts HTTP/1.1\r\nHost: shop\r\n{IE}Content-Length: {size}\r\n"
                     "\r\n".encode())
        try:
            chunk = b"x" * 65536
            for _ in range(size // len(chunk)):
                sock.sendall(chunk)
        except OSError:  # answered and closed mid-upload
            pass
        response = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in response and (data := sock.recv(65536)):
                response += data  # the head is enough
    for conn in accepted:
        conn.close()
    listener.close()
    assert status_of(response) == 504, response[:300]
    assert any('kind="timeout"' in line for line in upstream_errors(stack.url))


def test_read_ahead_is_bounded_for_the_whole_proxy(make_stack: Any) -> None:
    """Before: every connection could hold body_buffer_bytes read ahead (1 MiB by default:
    10,000 slow uploads took 10 GiB). Past the process-wide budget a body streams, like
    one over the buffer, and the budget comes back when the request ends."""
    body = b'{"n": "' + b"x" * 50 + b'"}'  # 59 bytes
    stack = make_stack(body_buffer_bytes=64, body_buffer_total_bytes=100)
    budget = stack.app.rt.read_ahead
    pool = stack.app.rt.upstream(Backend.CORE).pool()
    first = SlowUpload(stack.proxy.port, IE, body, pause=0.05)
    eventually(lambda: budget.held == len(body), 10, "the first body read ahead")
    assert pool.open_connections == 0  # read ahead: no connection held yet
    second = SlowUpload(stack.proxy.port, IE, body, pause=0.05)  # 41 bytes left: streams
    eventually(lambda: pool.open_connections == 1, 10, "a connection for the streamed body")
    assert not first.uploaded.is_set() and not second.uploaded.is_set()
    assert first.status() == 201 and second.status() == 201
    assert [r["body_len"] for r in stack.core_app.requests[-2:]] == [59, 59]
    eventually(lambda: budget.held == 0, 10, "the budget given back")
    state = httpx.get(stack.url + "/_strangler/state").json()["read_ahead"]
    assert state == {"held_bytes": 0, "limit_bytes": 100, "refused": 1}
    metrics = httpx.get(stack.url + "/metrics").text.splitlines()
    assert "strangler_read_ahead_refused_total 1.0" in metrics
    assert "strangler_read_ahead_bytes 0.0" in metrics
