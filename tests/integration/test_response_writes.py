"""How the proxy's HTTP protocol writes responses: head and body of a small response in one
send(), and the response on the wire as soon as it is complete, before the app's
bookkeeping after the last byte runs."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

from proxy.server_protocol import CoalescingTransport, GuardedHttpToolsProtocol
from tests.support.servers import serve


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.eof = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def write_eof(self) -> None:
        self.eof = True

    def get_extra_info(self, name: str) -> str:
        return f"extra:{name}"


async def test_writes_of_one_iteration_go_out_as_one() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"")
    transport.write(b"body")
    assert inner.writes == []
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    transport.write(b"more")
    await asyncio.sleep(0)
    assert inner.writes[1:] == [b"more"]
    assert transport.get_extra_info("peername") == "extra:peername"  # the rest delegates


async def test_flush_close_and_eof_send_what_is_buffered_first() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"a")
    transport.flush()
    assert inner.writes == [b"a"]
    transport.write(b"b")
    transport.write_eof()
    assert (inner.writes, inner.eof) == ([b"a", b"b"], True)
    transport.write(b"c")
    transport.close()
    assert (inner.writes, inner.closed) == ([b"a", b"b", b"c"], True)
    await asyncio.sleep(0)  # the scheduled flushes find nothing left
    assert inner.writes == [b"a", b"b", b"c"]


async def test_nothing_is_written_to_a_closing_transport() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"late")
    inner.closed = True
    await asyncio.sleep(0)
    assert inner.writes == []


def test_a_complete_response_leaves_before_the_app_returns() -> None:
    """The app blocks its event loop after sending the last byte (as bookkeeping would)
    until the client has read the response: only a flush at response completion lets the
    client read it in the meantime."""
    client_has_it = threading.Event()
    seen: dict[str, bool] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b'{"ok":true}'
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        seen["client had the response"] = client_has_it.wait(5)  # blocks the loop

    with serve(app, http=GuardedHttpToolsProtocol, lifespan="off") as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\nhost: t\r\n\r\n")
        data = b""
        while not data.endswith(b'{"ok":true}'):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {data!r}"
            data += chunk
        client_has_it.set()
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        # keep-alive still works after the early flush
        sock.sendall(b"GET /y HTTP/1.1\r\nhost: t\r\n\r\n")
        again = b""
        while not again.endswith(b'{"ok":true}'):
            chunk = sock.recv(65536)
            assert chunk
            again += chunk
    assert seen["client had the response"] is True
