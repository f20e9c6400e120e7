"""Forwarding to a backend: pooled keep-alive connections, streaming both ways.

Error tree, mapped from proxy.h1client at this boundary:

    UpstreamError
    ├── UpstreamUnreachable   nothing was sent: safe to fail over, whatever the method
    ├── UpstreamTimeout       sent, no answer in time (504)
    └── UpstreamBroken        sent, then the connection failed (502)
    BodyTooLarge              the client's body exceeded the limit (413)
    ClientGone                the client disconnected while sending its body

`upstream_error` maps what proxy.h1client raises (on the request or, later, while the
response body is read) onto the tree. Failures of the client (a slow or abandoned upload)
are never an `UpstreamError`: they are not the backend's to answer for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from proxy.h1client import ConnectError, Pool, ReadTimeout, Response, parse_origin


class UpstreamError(Exception):
    kind = "error"


class UpstreamUnreachable(UpstreamError):
    kind = "connect"


class UpstreamTimeout(UpstreamError):
    kind = "timeout"


class UpstreamBroken(UpstreamError):
    kind = "reset"


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


Receive = Callable[[], Awaitable[dict[str, Any]]]


class RequestBody:
    """The client's body as an async iterator over ASGI `receive`, with a size limit.

    `first` holds what was read ahead; with `more` False it is the whole body, held in
    memory (`read_body`). `started` tells whether bytes streamed from the client were
    handed to an upstream: until then the request can be sent elsewhere. A body held whole
    never starts in that sense: it can be sent again (to legacy, when the core could not be
    reached).
    """

    __slots__ = ("first", "limit", "more", "receive", "size", "started")

    def __init__(self, receive: Receive, limit: int, first: bytes = b"", more: bool = True):
        self.receive = receive
        self.limit = limit
        self.first = first
        self.more = more
        self.size = len(first)
        self.started = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.more:
            self.started = True
        if self.first:
            yield self.first
        while self.more:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            self.more = message.get("more_body", False)
            self.size += len(chunk)
            if self.size > self.limit:
                raise BodyTooLarge()
            if chunk:
                yield chunk


class ReadAheadBudget:
    """The bytes of request bodies read ahead across the process, at most `limit`: a body
    gets its share whole or not at all (it then streams, like a body over
    body_buffer_bytes). Used from one event loop."""

    def __init__(self, limit: int, on_refused: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self.held = 0
        self.refused = 0  # bodies that streamed because the budget was spent
        self.on_refused = on_refused

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            self.refused += 1
            if self.on_refused is not None:
                self.on_refused()
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size

    def stats(self) -> dict[str, int]:
        return {"held_bytes": self.held, "limit_bytes": self.limit, "refused": self.refused}


async def read_body(
    receive: Receive, limit: int, buffer_bytes: int, length: int | None,
) -> RequestBody:
    """The client's body, read before any upstream connection is taken when it fits in
    `buffer_bytes` (a declared length, or a chunked body that ends within them): a slow
    client then holds no pooled connection. A longer body streams on from what was read.
    Raises BodyTooLarge, ClientGone (and what `receive` raises, e.g. a body timeout)."""
    if length is not None and length > buffer_bytes:
        return RequestBody(receive, limit)
    parts: list[bytes] = []
    size = 0
    more = True
    while more and size <= buffer_bytes:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        if chunk:
            parts.append(chunk)
    return RequestBody(receive, limit, parts[0] if len(parts) == 1 else b"".join(parts), more)


def upstream_error(name: str, exc: OSError) -> UpstreamError:
    """What an h1client error means for backend `name`."""
    if isinstance(exc, ConnectError):
        return UpstreamUnreachable(f"{name}: {exc}")
    if isinstance(exc, ReadTimeout):
        return UpstreamTimeout(f"{name}: {exc}")
    return UpstreamBroken(f"{name}: {exc}")


@dataclass(frozen=True, slots=True)
class BackendConfig:
    name: str
    url: str
    connect_timeout: float
    read_timeout: float
    pool_size: int


class Upstream:
    """One backend: a pool of keep-alive HTTP/1.1 connections (proxy.h1client).

    No cookie jar, no decompression, no redirects: bytes are forwarded as they are."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        host, port, self.base = parse_origin(config.url)
        self._host_port = (host, port)
        self._pool: Pool | None = None

    def pool(self) -> Pool:
        if self._pool is None:
            host, port = self._host_port
            self._pool = Pool(host, port, limit=self.config.pool_size,
                              connect_timeout=self.config.connect_timeout,
                              read_timeout=self.config.read_timeout)
        return self._pool

    async def send(
        self, method: str, path_qs: str, headers: list[tuple[str, str]],
        body: RequestBody | None,
    ) -> Response:
        """Send the request; the caller must `release()` the response when done."""
        try:
            return await self.pool().request(method, self.base + path_qs, headers, body)
        except OSError as exc:  # ConnectError, ReadTimeout, ConnectionBroken
            raise upstream_error(self.config.name, exc) from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
