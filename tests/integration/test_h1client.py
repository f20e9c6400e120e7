"""proxy.h1client against real loopback sockets: scripted HTTP/1.1 servers written with
asyncio.start_server, each test scripting what the server answers and checking what it saw."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from proxy.h1client import (
    BUFFER_HIGH,
    ConnectError,
    ConnectionBroken,
    Pool,
    ReadTimeout,
    Response,
    parse_origin,
    transfer_codings,
)

# -- a scripted server -------------------------------------------------------------------------


@dataclass
class Request:
    """One request as the server read it off the wire."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]  # names as sent
    body: bytes  # de-framed
    raw_body: bytes  # as framed on the wire
    conn: int  # index of the connection it came on

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None


@dataclass
class Conn:
    """The server's side of one accepted connection."""

    server: Server
    index: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    requests: list[Request] = field(default_factory=list)

    async def read_request(self) -> Request | None:
        """The next request, or None when the client closed the connection between requests."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            self.server.eofs += 1
            return None
        first, *lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, version = first.split(" ")
        headers = [(n, v.strip()) for n, v in (line.split(":", 1) for line in lines)]
        request = Request(method, target, version, headers, b"", b"", self.index)
        if (request.header("transfer-encoding") or "").lower() == "chunked":
            body, raw = [], []
            while True:
                size_line = await self.reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                data = await self.reader.readexactly(size + 2)
                raw += [size_line, data]
                if size == 0:
                    assert data == b"\r\n", "no trailers expected"
                    break
                assert data.endswith(b"\r\n")
                body.append(data[:-2])
            request.body, request.raw_body = b"".join(body), b"".join(raw)
        elif (length := request.header("content-length")) is not None:
            request.body = request.raw_body = await self.reader.readexactly(int(length))
        self.requests.append(request)
        self.server.requests.append(request)
        return request

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def flush(self) -> None:
        await self.writer.drain()

    async def until_eof(self) -> None:
        """Read (and drop) everything until the client closes the connection."""
        while await self.reader.read(65536):
            pass
        self.server.eofs += 1


Handler = Callable[[Conn], Awaitable[None]]


class Server:
    """Runs `handler` for each accepted connection, closing the connection when it returns."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.accepted = 0
        self.active = 0  # connections whose handler is running
        self.max_active = 0
        self.eofs = 0  # connections the client closed, as seen by read_request/until_eof
        self.errors: list[BaseException] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Conn(self, self.accepted, reader, writer)
        self.accepted += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await self.handler(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away mid-request: some tests want exactly that
        except asyncio.CancelledError:
            pass  # stop(): ending normally spares asyncio.streams a cancelled task to report
        except Exception as exc:  # noqa: BLE001 - a broken script: reported at teardown
            self.errors.append(exc)
        finally:
            self.active -= 1
            self._tasks.discard(task)
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()


def reply(body: bytes = b"", status: int = 200, headers: Iterable[tuple[str, str]] = (),
          length: bool = True) -> bytes:
    """A response's bytes, with a Content-Length unless `length` is False."""
    lines = [f"HTTP/1.1 {status} Whatever"]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def answering(respond: bytes | Callable[[Request], bytes], delay: float = 0.0) -> Handler:
    """A handler answering every request of the connection, until the client closes it."""

    async def handler(conn: Conn) -> None:
        while (request := await conn.read_request()) is not None:
            if delay:
                await asyncio.sleep(delay)
            conn.send(respond if isinstance(respond, bytes) else respond(request))

    return handler


async def eventually(check: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


class Net:
    """Servers and pools of one test, all closed at its end."""

    def __init__(self) -> None:
        self.servers: list[Server] = []
        self.pools: list[Pool] = []

    async def server(self, handler: Handler) -> Server:
        server = Server(handler)
        await server.start()
        self.servers.append(server)
        return server

    def pool(self, port: int, **options: Any) -> Pool:
        settings: dict[str, Any] = {"limit": 4, "connect_timeout": 2.0, "read_timeout": 5.0}
        settings.update(options)
        pool = Pool("127.0.0.1", port, **settings)
        self.pools.append(pool)
        return pool


@pytest.fixture
async def net() -> AsyncIterator[Net]:
    net = Net()
    yield net
    for pool in net.pools:
        await pool.close()
    for server in net.servers:
        await server.stop()
    errors = [exc for server in net.servers for exc in server.errors]
    assert not errors, f"a server script failed: {errors!r}"


async def fetch(pool: Pool, method: str = "GET", target: str = "/",
                headers: list[tuple[str, str]] | None = None) -> tuple[Response, bytes]:
    """One exchange, body read and connection released."""
    response = await pool.request(method, target, headers or [])
    try:
        return response, await response.read()
    finally:
        response.release()


class Body:
    """A request body source: `chunks` in turn, an exception where one stands in the list."""

    def __init__(self, *chunks: bytes | Exception, endless: bytes = b"") -> None:
        self.chunks = chunks
        self.endless = endless
        self.started = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        for chunk in self.chunks:
            await asyncio.sleep(0)
            if isinstance(chunk, Exception):
                raise chunk
            yield chunk
        while self.endless:
            await asyncio.sleep(0)
            yield self.endless


class Boom(Exception):
    pass


def pattern(size: int) -> bytes:
    return random.Random(size).randbytes(size)


# -- the happy path ----------------------------------------------------------------------------


async def test_get_returns_status_headers_and_body(net: Net) -> None:
    server = await net.server(answering(reply(b"hello", headers=[("X-Custom", "Yes")])))
    pool = net.pool(server.port)

    response = await pool.request("GET", "/a/b?c=1", [("accept", "text/plain"), ("x-id", "7")])
    try:
        assert response.status == 200
        assert response.raw_headers == [(b"Content-Length", b"5"), (b"X-Custom", b"Yes")]
        assert response.content_length == 5
        assert await response.read() == b"hello"
    finally:
        response.release()

    [seen] = server.requests
    assert (seen.method, seen.target, seen.version) == ("GET", "/a/b?c=1", "HTTP/1.1")
    assert seen.headers == [("host", f"127.0.0.1:{server.port}"), ("accept", "text/plain"),
                            ("x-id", "7")]
    assert seen.raw_body == b""


async def test_sequential_requests_share_one_connection(net: Net) -> None:
    server = await net.server(answering(lambda r: reply(r.target.encode())))
    pool = net.pool(server.port)

    for target in ("/one", "/two", "/three"):
        response, body = await fetch(pool, target=target)
        assert (response.status, body) == (200, target.encode())
    assert server.accepted == 1
    assert [r.conn for r in server.requests] == [0, 0, 0]
    assert pool.idle_connections == 1


async def test_connection_close_response_is_not_reused(net: Net) -> None:
    # the server would go on answering on that connection: only the client can close it
    server = await net.server(answering(reply(b"bye", headers=[("Connection", "close")])))
    pool = net.pool(server.port)

    for _ in range(2):
        _, body = await fetch(pool)
        assert body == b"bye"
    assert server.accepted == 2
    assert pool.idle_connections == 0
    await eventually(lambda: server.eofs == 2)  # the client closed both


async def test_response_released_before_its_end_closes_the_connection(net: Net) -> None:
    async def handler(conn: Conn) -> None:
        while await conn.read_request() is not None:
            if conn.index == 0:
                conn.send(reply(b"0123456789")[:-5])  # the rest never comes
            else:
                conn.send(reply(b"full"))

    server = await net.server(handler)
    pool = net.pool(server.port)

    first = await pool.request("GET", "/", [])
    assert first.content_length == 10
    first.release()
    assert pool.open_connections == 0
    _, body = await fetch(pool)
    assert body == b"full"
    assert server.accepted == 2
    assert [r.conn for r in server.requests] == [0, 1]


async def test_chunked_body_is_streamed_as_it_arrives(net: Net) -> None:
    first_seen = asyncio.Event()

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        conn.send(reply(length=False, headers=[("Transfer-Encoding", "chunked")]))
        conn.send(b"5\r\nfirst\r\n")
        await first_seen.wait()  # the client must yield it before the body ends
        for part in (b"second", b"third"):
            await asyncio.sleep(0.02)
            conn.send(b"%x\r\n%b\r\n" % (len(part), part))
            await conn.flush()
        conn.send(b"0\r\n\r\n")
        await conn.until_eof()

    server = await net.server(handler)
    pool = net.pool(server.port)

    response = await pool.request("GET", "/stream", [])
    assert response.content_length is None
    pieces: list[bytes] = []
    async with asyncio.timeout(5):
        async for piece in response.iter_any():
            pieces.append(piece)
            first_seen.set()
    response.release()
    assert pieces[0] == b"first"
    assert len(pieces) >= 2
    assert b"".join(pieces) == b"firstsecondthird"
    assert pool.idle_connections == 1


async def test_body_until_close(net: Net) -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        conn.send(reply(b"part one, ", length=False))
        await conn.flush()
        await asyncio.sleep(0.02)
        conn.send(b"part two")
        # returning closes the connection: the end of the body

    server = await net.server(handler)
    pool = net.pool(server.port)

    response = await pool.request("GET", "/", [])
    assert response.content_length is None
    assert await response.read() == b"part one, part two"
    response.release()
    assert pool.open_connections == 0


@pytest.mark.parametrize(("method", "answer"), [
    ("HEAD", reply(length=False, headers=[("Content-Length", "5")])),
    ("GET", reply(status=204, length=False)),
    ("GET", reply(status=304, length=False, headers=[("Content-Length", "5"), ("ETag", "x")])),
])
async def test_responses_without_body_end_at_the_head(net: Net, method: str,
                                                      answer: bytes) -> None:
    server = await net.server(answering(lambda r: answer if r.target == "/first" else reply(b"ok")))
    pool = net.pool(server.port)

    response = await pool.request(method, "/first", [])
    async with asyncio.timeout(2):
        assert await response.read() == b""
    response.release()
    response, body = await fetch(pool, target="/second")
    assert body == b"ok"
    assert server.accepted == 1


async def test_head_response_ignores_bytes_sent_as_its_body(net: Net) -> None:
    server = await net.server(answering(
        lambda r: reply(b"hello") if r.method == "HEAD" else reply(b"ok")
    ))
    pool = net.pool(server.port)

    response, body = await fetch(pool, "HEAD")
    assert (response.status, response.content_length, body) == (200, 5, b"")
    response, body = await fetch(pool)
    assert body == b"ok"


@pytest.mark.parametrize("split", [False, True])
async def test_interim_100_continue_is_skipped(net: Net, split: bool) -> None:
    async def handler(conn: Conn) -> None:
        while await conn.read_request() is not None:
            conn.send(b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n")
            if split:
                await conn.flush()
                await asyncio.sleep(0.02)
            conn.send(reply(b"done", headers=[("X-Final", "1")]))

    server = await net.server(handler)
    pool = net.pool(server.port)

    for _ in range(2):
        response, body = await fetch(pool)
        assert response.status == 200
        assert response.raw_headers == [(b"Content-Length", b"4"), (b"X-Final", b"1")]
        assert body == b"done"
    assert server.accepted == 1


async def test_trailers_do_not_change_the_headers(net: Net) -> None:
    server = await net.server(answering(
        reply(length=False, headers=[("Transfer-Encoding", "chunked")])
        + b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n"
    ))
    pool = net.pool(server.port)

    response, body = await fetch(pool)
    assert body == b"abc"
    assert response.raw_headers == [(b"Transfer-Encoding", b"chunked")]


# -- what the upstream should not have sent -----------------------------------------------------


def discarded(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "strangler.upstream"]


@pytest.mark.parametrize("extra", [reply(b"<script>evil</script>!"), b"<script>evil</script>!"],
                         ids=["response", "junk"])
@pytest.mark.parametrize("first", [
    reply(b'{"a":1}'),
    reply(length=False, headers=[("Transfer-Encoding", "chunked")]) + b'7\r\n{"a":1}\r\n0\r\n\r\n',
], ids=["length", "chunked"])
async def test_bytes_after_a_complete_response_in_the_same_packet_are_never_handed_out(
    net: Net, caplog: pytest.LogCaptureFixture, first: bytes, extra: bytes,
) -> None:
    server = await net.server(answering(
        lambda r: first + extra if r.target == "/" else reply(b"ok")))
    pool = net.pool(server.port)

    with caplog.at_level(logging.WARNING, logger="strangler.upstream"):
        response, body = await fetch(pool)
        assert (response.status, body) == (200, b'{"a":1}')
        assert pool.idle_connections == 0  # closed, not pooled
        _, body = await fetch(pool, target="/next")
    assert body == b"ok"
    assert [r.conn for r in server.requests] == [0, 1]
    assert len(discarded(caplog)) == 1
    assert "after a complete response" in discarded(caplog)[0]


@pytest.mark.parametrize("stray", [b"0\r\n\r\n", b"0\r\nX-Trailer: 1\r\n\r\n",
                                   b"5\r\nhello\r\n0\r\n\r\n"], ids=["empty", "trailer", "data"])
async def test_a_chunked_body_after_a_head_answer_is_not_asked_for(
    net: Net, caplog: pytest.LogCaptureFixture, stray: bytes,
) -> None:
    # llhttp does not know the request was a HEAD: it reads those chunks as the body
    chunked = reply(length=False, headers=[("Transfer-Encoding", "chunked")])
    server = await net.server(answering(lambda r: chunked + stray if r.method == "HEAD"
                                        else reply(b"ok")))
    pool = net.pool(server.port)

    with caplog.at_level(logging.WARNING, logger="strangler.upstream"):
        response, body = await fetch(pool, "HEAD")
        assert (response.status, body) == (200, b"")
        assert (await fetch(pool))[1] == b"ok"
    assert [r.conn for r in server.requests] == [0, 1]
    assert len(discarded(caplog)) == 1


async def test_bytes_while_the_connection_is_idle_close_it(
    net: Net, caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(conn: Conn) -> None:
        while await conn.read_request() is not None:
            conn.send(reply(b"ok"))
            if conn.index == 0:
                await conn.flush()
                await asyncio.sleep(0.05)
                conn.send(b"HTTP/1.1 408 Request Timeout\r\n\r\n")  # unasked

    server = await net.server(handler)
    pool = net.pool(server.port)

    with caplog.at_level(logging.WARNING, logger="strangler.upstream"):
        assert (await fetch(pool))[1] == b"ok"
        await eventually(lambda: pool.open_connections == 0)
        assert (await fetch(pool))[1] == b"ok"
    assert server.accepted == 2
    assert len(discarded(caplog)) == 1


@pytest.mark.parametrize("status", [b"099", b"600", b"999"])
async def test_a_status_outside_100_to_599_is_refused(net: Net, status: bytes) -> None:
    server = await net.server(answering(b"HTTP/1.1 %b Odd\r\nContent-Length: 2\r\n\r\nok" % status))
    pool = net.pool(server.port)

    with pytest.raises(ConnectionBroken, match="status"):
        await pool.request("GET", "/", [])
    assert pool.open_connections == 0


async def test_a_response_broken_before_it_is_handed_out_is_refused_whole(net: Net) -> None:
    # head and a bad chunk in one packet: the caller gets the error, not a head to relay
    server = await net.server(answering(
        reply(length=False, headers=[("Transfer-Encoding", "chunked")]) + b"zz\r\nab\r\n"))
    pool = net.pool(server.port)

    with pytest.raises(ConnectionBroken, match="invalid response"):
        await pool.request("GET", "/", [])
    assert pool.open_connections == 0


async def test_a_transfer_coding_other_than_chunked_is_read_to_the_close(net: Net) -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        conn.send(reply(length=False, headers=[("Transfer-Encoding", "gzip")]) + b"\x1f\x8b")
        await conn.flush()
        await asyncio.sleep(0.02)
        conn.send(b"rest of it")
        # returning closes the connection: the end of the body

    server = await net.server(handler)
    pool = net.pool(server.port)

    response = await pool.request("GET", "/", [])
    assert (response.content_length, response.transfer_encoding) == (None, b"gzip")
    assert response.raw_headers == [(b"Transfer-Encoding", b"gzip")]
    assert await response.read() == b"\x1f\x8brest of it"
    response.release()
    assert pool.open_connections == 0


@pytest.mark.parametrize(("value", "framing"), [
    (b"chunked", (True, None)),
    (b"Chunked ", (True, None)),
    (b"gzip, chunked", (True, b"gzip")),
    (b"gzip,chunked", (True, b"gzip")),
    (b"gzip,,chunked", (True, b"gzip")),  # empty list elements are ignored (RFC 9110 5.6.1)
    (b",chunked", (True, None)),
    (b"gzip", (False, b"gzip")),
    (b"gzip, br", (False, b"gzip, br")),
    (b"x-custom;level=1", (False, b"x-custom;level=1")),
    (b"chunked, gzip", ValueError),  # chunked must be last (RFC 9112 6.1)
    (b"gzip, chunked,", ValueError),  # llhttp reads the last element, "": chunked is not last
    (b"chunked, chunked", ValueError),  # and applied once
    (b"chunked;q=1", ValueError),
    (b"chunked\t", ValueError),  # llhttp does not take that tab for whitespace: not chunked
    (b"gzip,\tchunked ", (True, b"gzip")),
    (b'"chunked"', ValueError),
    (b",", ValueError),
])
def test_transfer_codings(value: bytes, framing: tuple[bool, bytes | None] | type) -> None:
    if framing is ValueError:
        with pytest.raises(ValueError):
            transfer_codings(value)
    else:
        assert transfer_codings(value) == framing


# -- retries and errors ------------------------------------------------------------------------


def closing_idle_connection() -> Handler:
    """Connection 0 answers its first request, then reads the second and closes unanswered
    (a keep-alive connection the server dropped as it was reused); the others answer."""

    async def handler(conn: Conn) -> None:
        while (request := await conn.read_request()) is not None:
            if conn.index == 0 and len(conn.requests) == 2:
                return
            conn.send(reply(f"{request.method} {conn.index}".encode()))

    return handler


async def test_stale_connection_is_retried_for_get(net: Net) -> None:
    server = await net.server(closing_idle_connection())
    pool = net.pool(server.port)

    assert (await fetch(pool))[1] == b"GET 0"
    response, body = await fetch(pool, target="/again")
    assert (response.status, body) == (200, b"GET 1")
    assert server.accepted == 2
    assert [(r.target, r.conn) for r in server.requests] == [("/", 0), ("/again", 0),
                                                            ("/again", 1)]


async def test_stale_connection_is_not_retried_for_post(net: Net) -> None:
    server = await net.server(closing_idle_connection())
    pool = net.pool(server.port)

    assert (await fetch(pool, "POST"))[1] == b"POST 0"
    with pytest.raises(ConnectionBroken):
        await pool.request("POST", "/again", [])
    assert server.accepted == 1
    assert len(server.requests) == 2
    assert pool.open_connections == 0


async def test_connection_closed_by_the_server_while_idle_is_not_reused(net: Net) -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        conn.send(reply(b"once"))  # keep-alive, then closed: the server's idle timeout

    server = await net.server(handler)
    pool = net.pool(server.port)

    assert (await fetch(pool))[1] == b"once"
    await eventually(lambda: pool.open_connections == 0)
    assert (await fetch(pool))[1] == b"once"
    assert server.accepted == 2


async def test_connect_error_on_a_closed_port(net: Net) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pool = net.pool(port)

    with pytest.raises(ConnectError) as caught:
        await pool.request("GET", "/", [])
    assert isinstance(caught.value, OSError)
    assert pool.open_connections == 0


async def test_read_timeout_when_the_server_never_answers(net: Net) -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.until_eof()

    server = await net.server(handler)
    pool = net.pool(server.port, read_timeout=0.3)

    with pytest.raises(ReadTimeout) as caught:
        await pool.request("GET", "/", [])
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value, OSError)
    await eventually(lambda: server.eofs == 1)  # the client gave the connection up
    assert pool.open_connections == 0


async def stalling_body(conn: Conn) -> None:
    """Head and 4 of 10 body bytes, then nothing."""
    await conn.read_request()
    conn.send(reply(b"0123456789")[:-6])
    await conn.until_eof()


@pytest.mark.parametrize("how", ["read", "iter_any", "read_late"])
async def test_read_timeout_mid_body(net: Net, how: str) -> None:
    server = await net.server(stalling_body)
    pool = net.pool(server.port, read_timeout=0.3)

    response = await pool.request("GET", "/", [])
    assert response.content_length == 10
    pieces: list[bytes] = []
    with pytest.raises(ReadTimeout):
        if how == "read":
            await response.read()
        elif how == "iter_any":
            async for piece in response.iter_any():
                pieces.append(piece)
        else:  # the timeout struck while nobody was reading: it is still what read() raises
            await asyncio.sleep(0.6)
            await response.read()
    response.release()
    if how == "iter_any":
        assert pieces == [b"0123"]
    assert pool.open_connections == 0
    await eventually(lambda: server.eofs == 1)


async def test_server_closing_mid_body_breaks_the_read(net: Net) -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        conn.send(reply(length=False, headers=[("Content-Length", "100")]) + b"x" * 10)

    server = await net.server(handler)
    pool = net.pool(server.port)

    response = await pool.request("GET", "/", [])
    assert (response.status, response.content_length) == (200, 100)
    with pytest.raises(ConnectionBroken):
        await response.read()
    response.release()
    assert pool.open_connections == 0


def asyncio_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "asyncio" and r.levelno >= logging.ERROR]


@pytest.mark.parametrize("answer", [
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
])
async def test_invalid_response_breaks_the_request(net: Net, answer: bytes,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    server = await net.server(answering(answer))
    pool = net.pool(server.port)

    with pytest.raises(ConnectionBroken):
        await pool.request("GET", "/", [])
    await eventually(lambda: pool.open_connections == 0)
    await eventually(lambda: server.eofs == 1)
    assert asyncio_errors(caplog) == []  # handled by the client, not by asyncio's last resort


async def test_unasked_101_ends_the_connection_cleanly(net: Net,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    server = await net.server(answering(reply(
        status=101, length=False, headers=[("Upgrade", "websocket"), ("Connection", "upgrade")]
    ) + b"\x81\x00"))
    pool = net.pool(server.port)

    with pytest.raises(ConnectionBroken, match="101"):  # the proxy answers 502
        await pool.request("GET", "/", [])
    await eventually(lambda: server.eofs == 1)
    assert pool.open_connections == 0
    assert asyncio_errors(caplog) == []


# -- request bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize("chunks", [
    [b"hello ", b"world"],
    [b"hello", b"", b" world"],  # an empty chunk must not end a chunked body
    [pattern(16 * 1024)] * 64,  # 1 MiB: written in parts, with flow control
])
@pytest.mark.parametrize("with_length", [True, False])
async def test_request_body(net: Net, chunks: list[bytes], with_length: bool) -> None:
    server = await net.server(answering(lambda r: reply(b"%d" % len(r.body))))
    pool = net.pool(server.port)
    data = b"".join(chunks)
    headers = [("content-length", str(len(data)))] if with_length else []
    body = Body(*chunks)

    for _ in range(2):  # the second on the same connection: the framing stayed in step
        response = await pool.request("PUT", "/upload", headers, body)
        assert await response.read() == str(len(data)).encode()
        response.release()
        body = Body(*chunks)
    assert server.accepted == 1
    seen = server.requests[0]
    assert seen.body == data
    if with_length:
        assert seen.header("content-length") == str(len(data))
        assert seen.header("transfer-encoding") is None
        assert seen.raw_body == data
    else:
        assert seen.header("content-length") is None
        assert seen.header("transfer-encoding") == "chunked"
        assert seen.raw_body.endswith(b"0\r\n\r\n")
        assert seen.raw_body != data


async def test_request_without_body_has_no_framing_headers(net: Net) -> None:
    server = await net.server(answering(reply(b"ok")))
    pool = net.pool(server.port)

    await fetch(pool, "POST")
    [seen] = server.requests
    assert seen.header("content-length") is None
    assert seen.header("transfer-encoding") is None


@pytest.mark.parametrize("with_length", [True, False])
async def test_body_failing_midway_closes_the_connection(net: Net, with_length: bool) -> None:
    server = await net.server(answering(reply(b"ok")))
    pool = net.pool(server.port, limit=1)
    headers = [("content-length", "100")] if with_length else []

    with pytest.raises(Boom):
        await pool.request("POST", "/", headers, Body(b"x" * 10, Boom("client gone")))
    await eventually(lambda: pool.open_connections == 0)
    await eventually(lambda: server.active == 0)
    assert server.requests == []  # the server never got a whole request
    async with asyncio.timeout(2):  # the only slot of the pool is free again
        assert (await fetch(pool))[1] == b"ok"


async def test_upload_stops_when_the_server_answers_and_closes(net: Net) -> None:
    async def handler(conn: Conn) -> None:
        await conn.reader.readuntil(b"\r\n\r\n")  # the head, not the body
        conn.send(reply(status=413, headers=[("Connection", "close")]))
        await asyncio.sleep(0.3)  # the client fills the buffers and waits for them to drain
        # returning closes the connection, its receive buffer full

    server = await net.server(handler)
    pool = net.pool(server.port)

    async with asyncio.timeout(5):
        response = await pool.request("POST", "/", [], Body(endless=b"x" * 65536))
        assert response.status == 413
        assert await response.read() == b""
    response.release()
    assert pool.open_connections == 0


# -- the pool ----------------------------------------------------------------------------------


async def test_pool_limit_bounds_concurrent_connections(net: Net) -> None:
    server = await net.server(answering(lambda r: reply(r.target.encode()), delay=0.05))
    pool = net.pool(server.port, limit=2)

    results = await asyncio.gather(*(fetch(pool, target=f"/{i}") for i in range(6)))
    assert [body for _, body in results] == [f"/{i}".encode() for i in range(6)]
    assert server.max_active == 2
    assert server.accepted == 2
    assert pool.open_connections == 2


async def test_cancelled_waiter_does_not_keep_a_slot(net: Net) -> None:
    server = await net.server(answering(reply(b"ok"), delay=0.1))
    pool = net.pool(server.port, limit=1)

    holder = asyncio.create_task(fetch(pool))
    await eventually(lambda: len(server.requests) == 1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.02):
            await fetch(pool)  # waits for the only slot, then gives up
    assert (await holder)[1] == b"ok"
    assert (await fetch(pool))[1] == b"ok"
    assert server.accepted == 1


async def test_slot_passes_on_when_a_woken_waiter_is_cancelled(net: Net) -> None:
    server = await net.server(answering(reply(b"ok")))
    pool = net.pool(server.port, limit=1)

    held = await pool.request("GET", "/", [])
    await held.read()
    woken = asyncio.create_task(fetch(pool))  # first in line for the slot
    other = asyncio.create_task(fetch(pool))
    for _ in range(3):
        await asyncio.sleep(0)  # both wait for the slot now
    held.release()  # wakes `woken`...
    woken.cancel()  # ...which is cancelled before it runs: `other` must get the slot
    async with asyncio.timeout(2):
        assert (await other)[1] == b"ok"
    with pytest.raises(asyncio.CancelledError):
        await woken
    assert server.accepted == 1


async def test_cancelled_request_frees_its_connection(net: Net) -> None:
    async def handler(conn: Conn) -> None:
        while await conn.read_request() is not None:
            if conn.index == 0:
                await conn.until_eof()  # the first connection never answers
                return
            conn.send(reply(b"ok"))

    server = await net.server(handler)
    pool = net.pool(server.port, limit=1)

    stuck = asyncio.create_task(pool.request("GET", "/", []))
    await eventually(lambda: len(server.requests) == 1)
    stuck.cancel()  # e.g. the downstream client went away
    with pytest.raises(asyncio.CancelledError):
        await stuck
    assert pool.open_connections == 0
    await eventually(lambda: server.eofs == 1)
    async with asyncio.timeout(2):
        assert (await fetch(pool))[1] == b"ok"
    assert server.accepted == 2


async def test_most_recently_released_connection_is_reused_first(net: Net) -> None:
    server = await net.server(answering(lambda r: reply(b"%d" % r.conn), delay=0.02))
    pool = net.pool(server.port)

    first, second = await asyncio.gather(pool.request("GET", "/", []),
                                         pool.request("GET", "/", []))
    bodies = [await first.read(), await second.read()]
    assert sorted(bodies) == [b"0", b"1"]
    first.release()
    second.release()
    assert pool.idle_connections == 2
    assert (await fetch(pool))[1] == bodies[1]


async def test_large_response_streams_intact(net: Net) -> None:
    data = pattern(2 * 1024 * 1024)
    server = await net.server(answering(lambda r: reply(data if r.target == "/big" else b"ok")))
    pool = net.pool(server.port)

    response = await pool.request("GET", "/big", [])
    assert response.content_length == len(data)
    pieces: list[bytes] = []
    async for piece in response.iter_any():
        pieces.append(piece)
        for _ in range(3):  # a slow consumer: reading from the socket pauses and resumes
            await asyncio.sleep(0)
    response.release()
    assert b"".join(pieces) == data
    assert len(pieces) > 1
    assert (await fetch(pool))[1] == b"ok"  # the connection is reused, reading resumed
    assert server.accepted == 1


async def test_consumer_slower_than_read_timeout_is_not_a_timeout(net: Net) -> None:
    # the upstream sends everything at once; the client, not the upstream, is slow: while
    # reading is paused for want of buffer room, no byte can arrive
    data = pattern(2 * 1024 * 1024)
    server = await net.server(answering(reply(data)))
    pool = net.pool(server.port, read_timeout=0.3)

    response = await pool.request("GET", "/", [])
    pieces: list[bytes] = []
    async for piece in response.iter_any():
        if not pieces:
            await asyncio.sleep(0.7)  # the buffer fills, then reading pauses
        pieces.append(piece)
    response.release()
    assert b"".join(pieces) == data


async def test_unread_complete_body_released_while_reading_paused(net: Net) -> None:
    # a body one byte over the buffer limit: it is complete exactly when reading pauses
    big = pattern(BUFFER_HIGH + 1)
    server = await net.server(answering(lambda r: reply(big if r.target == "/big" else b"ok")))
    pool = net.pool(server.port, read_timeout=1.0)

    response = await pool.request("GET", "/big", [])
    await asyncio.sleep(0.3)  # loopback: the whole body arrives
    response.release()  # without reading it: the body is complete, the connection reusable
    assert pool.idle_connections == 1
    assert (await fetch(pool))[1] == b"ok"
    assert server.accepted == 1


async def test_idle_connections_are_closed_after_idle_timeout(net: Net) -> None:
    server = await net.server(answering(reply(b"ok")))
    pool = net.pool(server.port, idle_timeout=0.2)

    await fetch(pool)
    assert pool.idle_connections == 1
    assert server.eofs == 0
    await asyncio.sleep(0.5)
    assert server.eofs == 1
    assert pool.idle_connections == 0
    assert pool.open_connections == 0
    assert (await fetch(pool))[1] == b"ok"  # and a new one is made when needed
    assert server.accepted == 2


async def test_close_closes_connections_and_refuses_requests(net: Net) -> None:
    server = await net.server(answering(reply(b"ok")))
    pool = net.pool(server.port)

    await fetch(pool)
    assert pool.idle_connections == 1
    await pool.close()
    await eventually(lambda: server.eofs == 1)
    assert pool.open_connections == 0
    with pytest.raises(ConnectError):
        await pool.request("GET", "/", [])
    assert server.accepted == 1


async def test_close_fails_requests_in_flight_and_waiting(net: Net) -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.until_eof()  # never answers

    server = await net.server(handler)
    pool = net.pool(server.port, limit=1)

    in_flight = asyncio.create_task(pool.request("GET", "/", []))
    await eventually(lambda: len(server.requests) == 1)
    waiting = asyncio.create_task(pool.request("GET", "/", []))
    await asyncio.sleep(0.01)
    await pool.close()
    with pytest.raises(ConnectionBroken):
        await in_flight
    with pytest.raises(ConnectError):
        await waiting
    assert pool.open_connections == 0


# -- parse_origin ------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "origin"), [
    ("http://core.internal", ("core.internal", 80, "")),
    ("http://core.internal:8081", ("core.internal", 8081, "")),
    ("http://127.0.0.1:9000/legacy/", ("127.0.0.1", 9000, "/legacy")),
    ("http://[::1]:9000/a/b", ("::1", 9000, "/a/b")),
])
def test_parse_origin(url: str, origin: tuple[str, int, str]) -> None:
    assert parse_origin(url) == origin


@pytest.mark.parametrize("url", ["https://core.internal", "http:///path", "core.internal:80",
                                 "ftp://core.internal"])
def test_parse_origin_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        parse_origin(url)
