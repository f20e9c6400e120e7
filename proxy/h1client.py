"""A pooled HTTP/1.1 client for the forwarding path: asyncio protocol + llhttp (httptools).

Why not aiohttp's ClientSession: measured on this project's machines it costs about 55 us of
CPU per proxied request (URL objects, multidicts, tracing hooks, timers, a body-writer task),
more than everything else the proxy does together; this client costs a fraction of that for
the same work, because a proxy needs much less: one origin per pool, headers already
cleaned, bytes in and bytes out (docs/benchmarks.md has the figures).

What it does:
- keep-alive connections per origin, reused most-recent first, at most `limit` open; callers
  beyond it wait for a free one; idle ones are closed after `idle_timeout` seconds (below
  the 5 s keep-alive of uvicorn, the backends' server, so that a pooled connection is rarely
  one the server is closing);
- the request head and a small body leave in one write; a streamed body is forwarded with
  its Content-Length when the client sent one, chunked otherwise, with flow control;
- the response head is parsed by llhttp; the body is buffered up to 256 KiB (then reading
  from the upstream pauses) and handed out with `read()` or `iter_any()`; 1xx interim
  responses are skipped; HEAD, 204 and 304 have no body; a body without length, or whose
  last transfer coding is not chunked, ends with the connection (RFC 9112 6.3);
- a byte the upstream sends after a complete response (a stray body after a 204, 304 or
  HEAD answer, a second response nobody asked for, junk) is never handed out: the
  connection is closed, not pooled, and one line is logged. Only bytes that arrive once the
  next request was sent cannot be told apart from its response;
- a status outside 100-599, a status line that does not start with `HTTP/`, `chunked`
  applied twice or not last: the response is refused (`ConnectionBroken`), as is everything
  llhttp refuses; a response found broken before it was handed out raises at once;
- a connect failure or timeout raises `ConnectError` (nothing was sent); no byte for
  `read_timeout` seconds raises `ReadTimeout`; a connection that breaks raises
  `ConnectionBroken`. A request on a reused connection that the server closed without
  answering is retried once on a new connection when its method is idempotent and no body
  byte was taken from the client (what browsers and aiohttp do).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
from collections.abc import AsyncIterator
from typing import NoReturn, Protocol

import httptools

log = logging.getLogger("strangler.upstream")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
BUFFER_HIGH = 256 * 1024  # buffered response bytes above which reading pauses
SMALL_BODY = 64 * 1024  # request body chunks joined to the head below this size


class ConnectError(OSError):
    """No connection could be made: nothing was sent."""


class ReadTimeout(TimeoutError):
    """No byte from the upstream for `read_timeout` seconds."""


class ConnectionBroken(OSError):
    """The connection failed or the upstream broke the protocol after the request began."""


class BodySource(Protocol):
    started: bool

    def __aiter__(self) -> AsyncIterator[bytes]: ...


class _Stale(Exception):
    """A reused connection closed before any byte of the response: safe to retry."""


class _Stop(Exception):
    """Raised in a parser callback to stop llhttp: the rest of the bytes is not parsed."""


class Response:
    """One upstream response. The caller must call `release()` when done with it.

    `raw_headers` are the upstream's, as received. `transfer_encoding` names the transfer
    codings applied to the body that this client did not undo (all but a final `chunked`,
    e.g. `gzip`): the next hop's Transfer-Encoding must name them; None when there are none.
    """

    __slots__ = ("_conn", "_released", "content_length", "raw_headers", "status",
                 "transfer_encoding")

    def __init__(self, conn: _Connection, status: int, raw_headers: list[tuple[bytes, bytes]],
                 content_length: int | None, transfer_encoding: bytes | None = None) -> None:
        self._conn = conn
        self._released = False
        self.status = status
        self.raw_headers = raw_headers
        self.content_length = content_length
        self.transfer_encoding = transfer_encoding

    async def read(self) -> bytes:
        """The whole body."""
        conn = self._conn
        parts: list[bytes] = []
        while True:
            chunk = conn.take_body()
            if chunk:
                parts.append(chunk)
            elif conn.body_done:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            else:
                await conn.wait_body()

    async def iter_any(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive."""
        conn = self._conn
        while True:
            chunk = conn.take_body()
            if chunk:
                yield chunk
            elif conn.body_done:
                return
            else:
                await conn.wait_body()

    def release(self) -> None:
        """Give the connection back to the pool if the exchange ended cleanly, else close it.
        Only the first call counts: the connection may serve another exchange by the next."""
        if not self._released:
            self._released = True
            self._conn.finish()


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one exchange at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.exchanges = 0
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        # What follows a message is this client's to judge: llhttp must read a final
        # response after a 1xx that says Connection: close, and hand any bytes after the
        # final one to on_message_begin, which refuses them.
        self.parser.set_dangerous_leniencies(lenient_keep_alive=True)
        self.head: asyncio.Future[Response] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.status = 0
        self.until_eof = False
        self.no_body = False
        self.chunks_unasked = False
        self.got_bytes = False
        self.body: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.body_done = False
        self.body_waiter: asyncio.Future[None] | None = None
        self.error: BaseException | None = None
        self.keep_alive = False
        self.interim_close = False
        self.method_head = False
        self.reading_paused = False
        self.paused = False
        self.write_waiter: asyncio.Future[None] | None = None
        self.last_read = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.in_use = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.last_read = self.loop.time()
        if not self.in_use or self.body_done:
            self._discard("while idle" if not self.in_use else "after a complete response")
            return
        if not self.got_bytes:
            self.got_bytes = True
            if not data.startswith(b"HTTP/") and not b"HTTP/".startswith(data):
                # llhttp would also read an RTSP/ or ICE/ status line, or one after blank lines
                self._fail(ConnectionBroken(f"the upstream did not answer HTTP: {data[:16]!r}"))
                self._close()
                return
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self.body_done:  # llhttp stopped at bytes that follow the whole response
                self._discard("after a complete response")
                return
            if self.error is None:
                self._fail(ConnectionBroken(f"invalid response from the upstream: {exc!r}"))
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        self._cancel_timer()
        self._wake_writer()  # a body upload waiting for the transport to drain: it never will
        if not self.in_use or self.body_done or self.error is not None:
            return  # an exchange that failed already keeps its first error (a ReadTimeout)
        if self.head is not None and not self.head.done():
            if not self.got_bytes and self.exchanges > 1:
                self._fail(_Stale())
            else:
                self._fail(ConnectionBroken(
                    f"the upstream closed the connection: {exc or 'EOF'}"))
        elif self.until_eof and exc is None:
            self._body_complete()
        else:
            self._fail(ConnectionBroken(f"the upstream broke off the body: {exc or 'EOF'}"))

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake_writer()

    # -- llhttp callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.status:  # the final response is whole: a second one was not asked for
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.status:  # a trailer: the head was handed out already
            return
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # interim: the real answer follows
            self.headers = []
            self.interim_close = self.interim_close or not self.parser.should_keep_alive()
            return
        if status == 101:  # no upgrade was asked for
            self._refuse("the upstream switched protocols unasked (101)")
        if status < 200 or status > 599:  # RFC 9110 15: three digits, 1xx to 5xx
            self._refuse(f"the upstream answered an invalid status ({status})")
        self.status = status
        length: int | None = None
        coded: bytes | None = None
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"content-length":  # llhttp refuses it beside a Transfer-Encoding
                length = int(value)
            elif lower == b"transfer-encoding":
                coded = value if coded is None else coded + b"," + value
        chunked = False
        codings: bytes | None = None
        if coded == b"chunked":  # what nearly every upstream sends
            chunked = True
        elif coded is not None:
            try:
                chunked, codings = transfer_codings(coded)
            except ValueError as exc:
                self._refuse(str(exc))
        self.no_body = self.method_head or status in (204, 304)
        self.chunks_unasked = chunked and self.method_head  # llhttp waits for them
        self.until_eof = not self.no_body and not chunked and length is None
        self.keep_alive = (self.parser.should_keep_alive() and not self.until_eof
                           and not self.interim_close)
        head = self.head
        if head is not None and not head.done():
            head.set_result(Response(self, status, self.headers, length,
                                     None if self.no_body else codings))
        if self.no_body:
            self._body_complete()

    def on_body(self, body: bytes) -> None:
        if self.no_body:  # llhttp does not know the request was a HEAD: bytes not asked for
            raise _Stop
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > BUFFER_HIGH and not self.reading_paused and self.transport:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake_body()

    def on_message_complete(self) -> None:
        if self.status == 0:  # the end of an interim 1xx response
            return
        if self.chunks_unasked:  # a chunked body after a HEAD answer (even an empty one)
            raise _Stop
        self.keep_alive = self.keep_alive and self.parser.should_keep_alive()
        self._body_complete()

    # -- exchange -----------------------------------------------------------------------------

    async def exchange(self, method: str, head: bytes, body: BodySource | None,
                       chunked: bool) -> Response:
        self.exchanges += 1
        self.in_use = True
        self.method_head = method == "HEAD"
        self.head = self.loop.create_future()
        transport = self.transport
        assert transport is not None
        if body is None:
            transport.write(head)
        else:
            await self._send_body(head, body, chunked)
        self.last_read = self.loop.time()  # the read timeout counts from the last byte sent
        self._arm_timer()
        response = await self.head
        if self.error is not None and not self.body_done:
            raise self.error  # broken before a byte of it was used: no half response to send
        return response

    async def _send_body(self, head: bytes, body: BodySource, chunked: bool) -> None:
        transport = self.transport
        assert transport is not None
        pending = [head]
        size = len(head)
        try:
            async for chunk in body:
                if self.closed:
                    break  # connection_lost has failed the exchange
                if not chunk:
                    continue  # in chunked framing an empty chunk would end the body
                if chunked:
                    pending.append(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                else:
                    pending.append(chunk)
                size += len(chunk)
                if size >= SMALL_BODY:
                    transport.write(b"".join(pending))
                    pending, size = [], 0
                    if self.paused:
                        await self._drain()
        except BaseException:
            self._close()  # half a request went out: this connection is done
            raise
        if chunked:
            pending.append(b"0\r\n\r\n")
        if pending and not self.closed:
            transport.write(b"".join(pending))

    async def _drain(self) -> None:
        """Until the upstream reads what was written; an upstream that reads nothing for
        `read_timeout` seconds is a ReadTimeout (a slow client is no upstream's fault)."""
        if self.closed:
            return
        self.write_waiter = self.loop.create_future()
        try:
            async with asyncio.timeout(self.pool.read_timeout):
                await self.write_waiter
        except TimeoutError:
            raise ReadTimeout(
                f"the upstream read no request body for {self.pool.read_timeout} s") from None

    def take_body(self) -> bytes:
        if not self.body:
            return b""
        data = self.body.popleft() if len(self.body) == 1 else b"".join(self.body)
        self.body.clear()
        self.buffered = 0
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()
            self.last_read = self.loop.time()  # waiting for the upstream starts now
        return data

    async def wait_body(self) -> None:
        """Until more body bytes, the end of the body or a failure (raised)."""
        if self.error is not None:
            raise self.error
        if self.body or self.body_done:
            return
        self.body_waiter = self.loop.create_future()
        await self.body_waiter
        if self.error is not None:
            raise self.error

    def finish(self) -> None:
        if not self.in_use:
            return
        self._cancel_timer()
        reusable = self.body_done and self.error is None and self.keep_alive and not self.closed
        if reusable:
            if self.reading_paused and self.transport is not None:
                self.transport.resume_reading()  # paused for a body nobody will read
            self._reset()
            self.pool._put_back(self)
        else:
            head = self.head
            if head is not None:
                if not head.done():
                    head.cancel()  # nobody waits for it any more
                elif not head.cancelled():
                    head.exception()  # retrieved: an upload that failed raised its own error
            self.in_use = False
            self._close()
            self.pool._forget(self)

    # -- internals ----------------------------------------------------------------------------

    def _wake_body(self) -> None:
        waiter, self.body_waiter = self.body_waiter, None
        _resolve(waiter)

    def _body_complete(self) -> None:
        self.body_done = True
        self._cancel_timer()
        self._wake_body()

    def _refuse(self, reason: str) -> NoReturn:
        """Fail the exchange on a response llhttp accepted but this client does not, and stop
        the parser."""
        self._fail(ConnectionBroken(reason))
        raise _Stop

    def _discard(self, when: str) -> None:
        """Bytes nobody asked for: the connection cannot be trusted to frame another response.
        Closed (whatever is buffered of the response stays readable), logged once."""
        self.keep_alive = False
        transport = self.transport
        if transport is not None and not transport.is_closing():
            pool = self.pool
            log.warning("upstream %s:%d sent bytes %s: connection closed", pool.host,
                        pool.port, when)
            transport.close()

    def _fail(self, error: BaseException) -> None:
        self.error = error
        self._cancel_timer()
        head = self.head
        if head is not None and not head.done():
            head.set_exception(error)
        self._wake_body()
        self._wake_writer()

    def _wake_writer(self) -> None:
        waiter, self.write_waiter = self.write_waiter, None
        _resolve(waiter)

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _arm_timer(self) -> None:
        self.timer = self.loop.call_at(self.last_read + self.pool.read_timeout, self._on_timer)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timer(self) -> None:
        """One timer per exchange, moved forward only when it fires: reading a chunk just
        notes the time."""
        self.timer = None
        if not self.in_use or self.body_done:
            return
        if self.reading_paused:  # the consumer is slow, not the upstream
            self.timer = self.loop.call_later(self.pool.read_timeout, self._on_timer)
            return
        deadline = self.last_read + self.pool.read_timeout
        if self.loop.time() < deadline:
            self.timer = self.loop.call_at(deadline, self._on_timer)
            return
        self._fail(ReadTimeout(f"no data from the upstream for {self.pool.read_timeout} s"))
        self._close()


class Pool:
    """Keep-alive connections to one origin (`http://host:port`)."""

    def __init__(self, host: str, port: int, *, limit: int, connect_timeout: float,
                 read_timeout: float, idle_timeout: float = 4.0) -> None:
        self.host = host
        self.port = port
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.host_header = (f"{host}:{port}" if ":" not in host else f"[{host}]:{port}").encode()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: collections.deque[_Connection] = collections.deque()
        self._open: set[_Connection] = set()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def request(
        self, method: str, target: str, headers: list[tuple[str, str]],
        body: BodySource | None = None,
    ) -> Response:
        """Send one request; `target` is the path and query, `headers` exclude Host."""
        head, chunked = self._head(method, target, headers, body is not None)
        for attempt in (1, 2):
            conn = await self._acquire()
            try:
                return await conn.exchange(method, head, body, chunked)
            except _Stale:
                conn.finish()
                if attempt == 2 or method not in IDEMPOTENT or (
                    body is not None and body.started
                ):
                    raise ConnectionBroken(
                        "the upstream closed a kept-alive connection without answering"
                    ) from None
            except BaseException:
                conn.finish()
                raise
        raise AssertionError("unreachable")

    def _head(self, method: str, target: str, headers: list[tuple[str, str]],
              has_body: bool) -> tuple[bytes, bool]:
        lines = [f"{method} {target} HTTP/1.1\r\nhost: ".encode("latin-1"), self.host_header,
                 b"\r\n"]
        has_length = False
        for name, value in headers:
            if name.lower() == "content-length":
                has_length = True
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        chunked = has_body and not has_length
        if chunked:
            lines.append(b"transfer-encoding: chunked\r\n")
        lines.append(b"\r\n")
        return b"".join(lines), chunked

    async def _acquire(self) -> _Connection:
        if self._closed:
            raise ConnectError("the pool is closed")
        conn = self._pop_idle()
        if conn is not None:
            return conn
        while len(self._open) >= self.limit:
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # pass the slot on
                raise
            conn = self._pop_idle()
            if conn is not None:
                return conn
        return await self._connect()

    def _pop_idle(self) -> _Connection | None:
        """The most recently released live connection (the others may be closed by now)."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return None

    async def _connect(self) -> _Connection:
        conn = _Connection(self)
        self._open.add(conn)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self.loop.create_connection(lambda: conn, self.host, self.port)
        except TimeoutError:
            self._forget(conn)
            raise ConnectError(f"connect timeout after {self.connect_timeout} s") from None
        except OSError as exc:
            self._forget(conn)
            raise ConnectError(str(exc) or type(exc).__name__) from exc
        except BaseException:
            self._forget(conn)
            raise
        if self._closed:  # closed while connecting
            conn._close()
            raise ConnectError("the pool is closed")
        return conn

    def _put_back(self, conn: _Connection) -> None:
        if self._closed:
            conn._close()
            return
        conn.idle_since = self.loop.time()
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self.idle_timeout, self._sweep)
        self._wake_one()

    def _forget(self, conn: _Connection) -> None:
        if conn in self._open:
            self._open.discard(conn)
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            if _resolve(self._waiters.popleft()):
                return

    def _sweep(self) -> None:
        """Close connections idle for longer than `idle_timeout` (oldest at the left)."""
        self._sweeper = None
        cutoff = self.loop.time() - self.idle_timeout
        idle = self._idle
        while idle and (idle[0].closed or idle[0].idle_since <= cutoff):
            idle.popleft()._close()
        if idle:
            self._sweeper = self.loop.call_at(idle[0].idle_since + self.idle_timeout,
                                              self._sweep)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    @property
    def idle_connections(self) -> int:
        return sum(1 for c in self._idle if not c.closed)

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._open):
            conn._close()
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(ConnectError("the pool is closed"))
        self._waiters.clear()
        await asyncio.sleep(0)  # let the transports close


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def transfer_codings(value: bytes) -> tuple[bool, bytes | None]:
    """A response's Transfer-Encoding (its fields joined with commas) -> (chunked framing,
    the codings left once a final `chunked` is undone, or None).

    The body is chunked when the last element is `chunked`, as llhttp reads it: its
    parser takes spaces after `chunked` for whitespace, not tabs. Otherwise the body ends
    with the connection (RFC 9112 6.3). ValueError when `chunked` is applied twice, is not
    last or has parameters (or a tab after it), when a coding is not a token, or when none
    is named: then llhttp and this client could frame the body differently."""
    if value.lstrip(b" \t").rstrip(b" ").lower() == b"chunked":
        return True, None
    items = value.split(b",")
    chunked = items[-1].lstrip(b" \t").rstrip(b" ").lower() == b"chunked"
    rest = [item.strip(b" \t") for item in (items[:-1] if chunked else items)]
    rest = [item for item in rest if item]
    for item in rest:
        name = item.split(b";", 1)[0].rstrip(b" \t")
        if name.lower() == b"chunked":
            raise ValueError(f"chunked applied twice or not last: {value!r}")
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid transfer coding: {value!r}")
    if not chunked and not rest:
        raise ValueError(f"no transfer coding named: {value!r}")
    return chunked, b", ".join(rest) or None


def _resolve(waiter: asyncio.Future[None] | None) -> bool:
    """Wake whoever awaits `waiter`; False when there was nobody (none, done or cancelled)."""
    if waiter is None or waiter.done():
        return False
    waiter.set_result(None)
    return True


def parse_origin(url: str) -> tuple[str, int, str]:
    """`http://host[:port][/base]` -> (host, port, base path without the trailing slash)."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"backend URL must be http://host[:port][/path], not {url!r}")
    return parts.hostname, parts.port or 80, parts.path.rstrip("/")


