"""How the proxy frames what a misbehaving upstream sends, through the real server: a raw
socket upstream writes scripted bytes, a keep-alive client reads the proxy's answers with
h11 and sends its next request on the same connection."""

from __future__ import annotations

import gzip
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h11
import pytest

from proxy.config import ProxySettings
from proxy.main import UVICORN_OPTIONS, create_app
from tests.support.servers import serve

# -- a scripted upstream -----------------------------------------------------------------------


@dataclass
class Script:
    """The packets written in answer to one target, a pause between them; then the
    connection is closed (`close`) or waits for the next request."""

    packets: list[bytes]
    close: bool = False
    written: threading.Event = field(default_factory=threading.Event)


class RawUpstream:
    """Answers each request with its target's script, or with a small 200 naming the target
    and the connection it came on. Records (connection number, target) of every request."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.scripts: dict[str, Script] = {}
        self.requests: list[tuple[int, str]] = []
        self._connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def script(self, target: str, *packets: bytes, close: bool = False) -> Script:
        self.scripts[target] = script = Script(list(packets), close)
        return script

    def connection_of(self, target: str) -> int:
        [number] = [n for n, t in self.requests if t == target]
        return number

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return  # closed
            self._connections += 1
            threading.Thread(target=self._serve, args=(sock, self._connections),
                             daemon=True).start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        buffered = b""
        with sock:
            while True:
                while b"\r\n\r\n" not in buffered:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buffered += data
                head, buffered = buffered.split(b"\r\n\r\n", 1)  # GET and HEAD: no body
                target = head.split(b" ", 2)[1].decode()
                self.requests.append((number, target))
                script = self.scripts.get(target)
                if script is None:
                    body = f"answer to {target} on connection {number}".encode()
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b"
                                 % (len(body), body))
                    continue
                for i, packet in enumerate(script.packets):
                    if i:
                        time.sleep(0.05)
                    sock.sendall(packet)
                script.written.set()
                if script.close:
                    return

    def close(self) -> None:
        self.listener.close()


# -- a keep-alive client -----------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name]


class Client:
    """One connection to the proxy; responses read by h11 (which refuses anything that is
    not a well-framed HTTP/1.1 response)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = h11.Connection(h11.CLIENT)

    def request(self, method: str, target: str) -> Reply:
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        self.sock.sendall(self.conn.send(h11.Request(
            method=method, target=target, headers=[("host", "shop.example")])) or b"")
        self.sock.sendall(self.conn.send(h11.EndOfMessage()) or b"")
        status, headers, body = 0, [], b""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(self.sock.recv(65536))
            elif isinstance(event, h11.Response):
                status, headers = event.status_code, list(event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return Reply(status, headers, body)
            else:
                raise AssertionError(f"unexpected {event!r}")

    def close(self) -> None:
        self.sock.close()


@dataclass
class Stack:
    upstream: RawUpstream
    port: int

    def client(self) -> Client:
        return Client(self.port)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    upstream = RawUpstream()
    tmp: Path = tmp_path_factory.mktemp("framing")
    url = f"http://127.0.0.1:{upstream.port}"
    settings = ProxySettings(core_url=url, legacy_url=url, rules_file=None,
                             db_path=str(tmp / "control.sqlite3"), state_cache="",
                             forward_path_prefixes=[], legacy_read_timeout=5.0)
    try:
        with serve(create_app(settings), **UVICORN_OPTIONS) as proxy:
            yield Stack(upstream, proxy.port)
    finally:
        upstream.close()


def discarded(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "strangler.upstream" and "after a complete response" in r.getMessage()]


def assert_next_request_is_answered(stack: Stack, client: Client, first: str, *,
                                    fresh_upstream: bool) -> None:
    """The next request on the same client connection gets its own answer; when the first
    answer carried bytes nobody asked for, from another upstream connection."""
    upstream = stack.upstream
    reply = client.request("GET", first + "/next")
    number = upstream.connection_of(first + "/next")
    assert (reply.status, reply.body) == (
        200, f"answer to {first}/next on connection {number}".encode())
    if fresh_upstream:
        assert number != upstream.connection_of(first)


def chunked(data: bytes, size: int = 1000) -> bytes:
    parts = [data[i:i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


# -- 1. bytes after a complete response ----------------------------------------------------------

EVIL = b"HTTP/1.1 200 OK\r\nContent-Length: 22\r\n\r\n<script>evil</script>!"


@pytest.mark.parametrize("answer", [
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b'7\r\n{"a":1}\r\n0\r\n\r\n' + EVIL, id="chunked-then-response"),
    pytest.param(b'HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{"a":1}' + EVIL,
                 id="length-then-response"),
    pytest.param(b'HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{"a":1}<script>evil</script>!',
                 id="length-then-junk"),
])
def test_bytes_after_a_complete_response_in_the_same_packet_never_reach_a_client(
    stack: Stack, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest,
    answer: bytes,
) -> None:
    target = "/extra/" + request.node.callspec.id
    stack.upstream.script(target, answer)
    client = stack.client()
    try:
        with caplog.at_level(logging.WARNING, logger="strangler.upstream"):
            reply = client.request("GET", target)
            assert (reply.status, reply.body) == (200, b'{"a":1}')
            stack.upstream.scripts[target].written.wait(5)
            assert_next_request_is_answered(stack, client, target, fresh_upstream=True)
        assert len(discarded(caplog)) == 1  # one line for the connection closed
    finally:
        client.close()


# -- 2. 204 and 304 with a stray body --------------------------------------------------------------


NOT_MODIFIED = b'HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: "v1"\r\n\r\n'


@pytest.mark.parametrize(("packets", "stray"), [
    pytest.param([b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nstray"], True,
                 id="204-length-body"),
    pytest.param([b"HTTP/1.1 204 No Content\r\n\r\nstray"], True, id="204-body"),
    pytest.param([b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + chunked(b"stray")], True, id="204-chunked-body"),
    pytest.param([b"HTTP/1.1 204 No Content\r\n\r\n", b"stray"], True, id="204-body-later"),
    pytest.param([NOT_MODIFIED], False, id="304-length"),
    pytest.param([NOT_MODIFIED + b"stray"], True, id="304-length-body"),
])
def test_a_204_or_304_reaches_the_client_without_a_body_and_the_next_request_is_answered(
    stack: Stack, request: pytest.FixtureRequest, packets: list[bytes], stray: bool,
) -> None:
    target = "/nobody/" + request.node.callspec.id
    stack.upstream.script(target, *packets)
    status = int(packets[0][9:12])
    client = stack.client()
    try:
        reply = client.request("GET", target)
        assert (reply.status, reply.body) == (status, b"")
        assert reply.header(b"content-length") == []
        if status == 304:
            assert reply.header(b"etag") == [b'"v1"']
        stack.upstream.scripts[target].written.wait(5)
        assert_next_request_is_answered(stack, client, target, fresh_upstream=stray)
    finally:
        client.close()


# -- 3. transfer codings other than chunked --------------------------------------------------------

TEXT = b"hello, gzip " * 200
GZIPPED = gzip.compress(TEXT)


def read_raw(port: int, target: str) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    """One request with Connection: close, read to the end by hand (h11 refuses any
    transfer coding but chunked): status line, headers, body with the chunked coding undone."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nhost: shop.example\r\nconnection: close\r\n\r\n"
                     .encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    status_line, *lines = head.split(b"\r\n")
    headers = [(n.strip().lower(), v.strip()) for n, v in (line.split(b":", 1) for line in lines)]
    codings = [c.strip() for n, v in headers if n == b"transfer-encoding" for c in v.split(b",")]
    body = b""
    if codings and codings[-1] == b"chunked":
        while True:
            size_line, rest = rest.split(b"\r\n", 1)
            size = int(size_line, 16)
            if size == 0:
                assert rest == b"\r\n", "the chunked body is complete"
                break
            body, rest = body + rest[:size], rest[size + 2:]
    else:
        body = rest
    return status_line, headers, body


@pytest.mark.parametrize(("fields", "packets"), [
    pytest.param([b"gzip"], [GZIPPED[:100], GZIPPED[100:]], id="gzip-to-the-close"),
    pytest.param([b"gzip, chunked"], [chunked(GZIPPED)], id="gzip-then-chunked"),
    pytest.param([b"gzip", b"chunked"], [chunked(GZIPPED)], id="gzip-then-chunked-two-fields"),
])
def test_a_transfer_coding_other_than_chunked_is_forwarded_with_its_bytes(
    stack: Stack, request: pytest.FixtureRequest, fields: list[bytes], packets: list[bytes],
) -> None:
    target = "/coded/" + request.node.callspec.id
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Custom: 1\r\n" + b"".join(
        b"Transfer-Encoding: %b\r\n" % f for f in fields) + b"\r\n"
    to_the_close = fields[-1] == b"gzip"
    stack.upstream.script(target, head, *packets, close=to_the_close)

    status_line, headers, body = read_raw(stack.port, target)
    assert status_line.startswith(b"HTTP/1.1 200 ")
    assert (b"x-custom", b"1") in headers and (b"content-type", b"text/plain") in headers
    codings = [c.strip() for n, v in headers if n == b"transfer-encoding" for c in v.split(b",")]
    assert codings == [b"gzip", b"chunked"]  # gzip still to undo, chunked by the proxy
    assert body == GZIPPED  # the bytes as the upstream coded them
    assert gzip.decompress(body) == TEXT
    if to_the_close:  # ended by the close: the next request needs a new upstream connection
        client = stack.client()
        try:
            assert_next_request_is_answered(stack, client, target, fresh_upstream=True)
        finally:
            client.close()


@pytest.mark.parametrize("fields", [
    [b"chunked, gzip"], [b"chunked", b"gzip"], [b"chunked, chunked"], [b"chunked", b"chunked"],
    [b"gzip, chunked,"],
], ids=["chunked-not-last", "chunked-not-last-two-fields", "chunked-twice",
        "chunked-twice-two-fields", "trailing-comma"])
def test_chunked_applied_twice_or_not_last_is_a_502(
    stack: Stack, request: pytest.FixtureRequest, fields: list[bytes],
) -> None:
    target = "/coded/bad/" + request.node.callspec.id
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(
        b"Transfer-Encoding: %b\r\n" % f for f in fields) + b"\r\n"
    stack.upstream.script(target, head + chunked(b"payload"), close=True)
    client = stack.client()
    try:
        reply = client.request("GET", target)
        assert reply.status == 502
        assert reply.header(b"content-type") == [b"application/problem+json"]
        assert b"payload" not in reply.body
        assert_next_request_is_answered(stack, client, target, fresh_upstream=True)
    finally:
        client.close()
