"""uvicorn's httptools protocol with the request-head limits it lacks.

uvicorn on httptools (llhttp) rejects malformed framing (duplicate or invalid
Content-Length, Content-Length with Transfer-Encoding, a Transfer-Encoding that does not
end in `chunked`, bad chunk sizes, bare CR or LF, obs-fold) with 400 and a closed
connection. It has no limit on the size of a request head and no deadline for reading one,
and it merges chunked trailers into the request headers. This subclass adds:

- a size limit on the request head (request line + headers): 431 and close;
- a deadline for reading a request head, from the connection's first byte or the first
  byte of the next request (slowloris): 408 and close;
- trailers dropped, never merged into the headers the app sees;
- the app is started only after the bytes that carried the request head were parsed
  whole, so a request whose framing turns out bad in the same packet (a bad chunk size,
  say) never reaches the app, and so never the upstream;
- problem+json bodies for the errors the protocol answers itself, then a lingering close
  (the rest of the request is read and dropped for a moment, so that the client reads the
  answer instead of a reset);
- an ASGI extension, `scope["extensions"][ABORT]()`, for a response the app cannot
  complete (its upstream broke off mid-body): the connection is closed so the client sees
  a truncated response, and uvicorn logs nothing more (the app logged the cause);
- the app's `begin_draining()`, if it has one, called when the server begins to shut down
  (uvicorn shuts every open connection down, after closing its listeners), so that a
  readiness probe answered from then on says so.

The limits come from the app (`http_limits` attribute, `HttpLimits`), so one protocol
class, importable by name, serves any number of apps and uvicorn worker processes.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from functools import partial
from typing import Any

from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from proxy.problems import problem_body


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_header_bytes: int = 32_768
    """Request line plus header fields, in bytes; above it: 431."""
    header_timeout: float = 10.0
    """Seconds to receive a whole request head; then 408 and the connection is closed."""


def _app_attribute(app: Any, name: str) -> Any:
    """An attribute of the app, looking through uvicorn's wrappers (`.app`); None if none."""
    for _ in range(4):
        value = getattr(app, name, None)
        if value is not None:
            return value
        app = getattr(app, "app", None)
        if app is None:
            break
    return None


def _limits_of(app: Any) -> HttpLimits:
    """The limits the app declares."""
    limits = _app_attribute(app, "http_limits")
    return limits if isinstance(limits, HttpLimits) else HttpLimits()


def raw_problem(status: int, slug: str, detail: str) -> bytes:
    """A complete HTTP/1.1 problem+json response that closes the connection."""
    body = problem_body(status, slug, detail, "")
    head = (
        b"content-type: application/problem+json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n"
    )
    return STATUS_LINE[status] + head + body


LINGER_SECONDS = 1.0
ABORT = "strangler.abort"


class CoalescingTransport:
    """Writes made in one event-loop iteration go out as one send().

    uvicorn writes the status line and headers as soon as the app sends
    `http.response.start`, then the body: two syscalls (and two loopback packets) for a
    small response. Buffering joins them. The buffer is flushed when the response is
    complete (`GuardedHttpToolsProtocol.on_response_complete`), so the last byte leaves at
    once instead of after the app's bookkeeping, and otherwise at the end of the loop
    iteration (the head and first chunks of a streamed body)."""

    __slots__ = ("_buf", "_loop", "_scheduled", "_t")

    def __init__(self, transport: Any, loop: Any) -> None:
        self._t = transport
        self._buf: list[bytes] = []
        self._loop = loop
        self._scheduled = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._buf.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self._buf:
            data = b"".join(self._buf) if len(self._buf) > 1 else self._buf[0]
            self._buf.clear()
            if not self._t.is_closing():
                self._t.write(data)

    def close(self) -> None:
        self.flush()
        self._t.close()

    def write_eof(self) -> None:
        self.flush()
        self._t.write_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)


def _abort(ref: weakref.ref[RequestResponseCycle]) -> None:
    """End a started response that cannot be completed: close the connection (after what
    was written), and mark the cycle so that uvicorn neither writes nor logs more."""
    cycle = ref()
    if cycle is None or cycle.response_complete or cycle.disconnected:
        return
    cycle.disconnected = True
    cycle.message_event.set()
    cycle.transport.close()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = _limits_of(self.app)
        self._in_head = True  # the next bytes belong to a request head
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._rejected = False
        self._feeding = False
        self._pending: list[tuple[RequestResponseCycle, Any]] = []
        self._length_ows = False  # a Content-Length value ended in whitespace

    # -- connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._arm_head_timer()

    def on_response_complete(self) -> None:
        transport = self.transport
        if isinstance(transport, CoalescingTransport):
            transport.flush()  # the whole response in one send(), now
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """The server is shutting down (called for every open connection)."""
        begin_draining = _app_attribute(self.app, "begin_draining")
        if callable(begin_draining):
            begin_draining()
        super().shutdown()

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        if self._in_head:
            self._head_bytes += len(data)
        self._feeding = True
        try:
            super().data_received(data)
        finally:
            self._feeding = False
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._reject(431, "header-too-large", "the request head is too large")
        pending, self._pending = self._pending, []
        if not self._rejected:
            for cycle, app in pending:
                super()._start_asgi_task(cycle, app)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        extensions: dict[str, Any] = cycle.scope.setdefault("extensions", {})
        # a weak reference: the scope must not keep its cycle alive (a reference cycle per
        # request would leave every request's objects to the garbage collector)
        extensions[ABORT] = partial(_abort, weakref.ref(cycle))
        if self._feeding:  # started once the whole packet parsed cleanly
            self._pending.append((cycle, app))
        else:
            super()._start_asgi_task(cycle, app)

    # -- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:
            self._arm_head_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a chunked trailer: never promoted to a header
        # llhttp keeps trailing whitespace, and uvicorn >= 0.55 strips it before the app sees
        # the value: decided here, whatever uvicorn does, so that "Content-Length: 3 " is
        # refused on every version, as proxy.hygiene refuses any length but plain digits
        if value[-1:] in (b" ", b"\t") and name.lower() == b"content-length":
            self._length_ows = True
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        if self._length_ows:
            self._length_ows = False
            self._reject(400, "bad-request", "invalid Content-Length")
            return
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        self._head_bytes = 0
        if size > self.limits.max_header_bytes:
            self._reject(431, "header-too-large", "the request head is too large")
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._rejected:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_head = True
        if not self._rejected:
            super().on_message_complete()

    # -- answers of the protocol itself ---------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        self._reject(400, "bad-request", msg)

    def _reject(self, status: int, slug: str, detail: str) -> None:
        """Answer `status` (unless a response is under way) and close the connection."""
        if self._rejected:
            return
        self._rejected = True
        self._cancel_head_timer()
        cycle = self.cycle
        if self.transport.is_closing():
            return
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.logger.info("rejected a request with %s: %s", status, detail)
            self.transport.write(raw_problem(status, slug, detail))
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # a running app now reads http.disconnect
            cycle.message_event.set()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._reject(408, "request-timeout", "the request head was not received in time")
