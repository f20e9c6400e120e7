"""Forwarding to a backend: pooled keep-alive connections, streaming both ways.

Error tree, mapped from proxy.h1client at this boundary:

    UpstreamError
    ├── UpstreamUnreachable   nothing was sent: safe to fail over, whatever the method
    ├── UpstreamTimeout       sent, no answer in time (504)
    └── UpstreamBroken        sent, then the connection failed (502)
    BodyTooLarge              the client's body exceeded the limit (413)
    ClientGone                the client disconnected while sending its body
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

    `started` tells whether any byte was handed to the upstream: until then a request can
    be sent elsewhere.
    """

    def __init__(self, receive: Receive, limit: int, first: bytes = b"", more: bool = True):
        self.receive = receive
        self.limit = limit
        self.first = first
        self.more = more
        self.size = len(first)
        self.started = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
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
        except ConnectError as exc:
            raise UpstreamUnreachable(f"{self.config.name}: {exc}") from exc
        except ReadTimeout as exc:
            raise UpstreamTimeout(f"{self.config.name}: no response in time") from exc
        except OSError as exc:
            raise UpstreamBroken(f"{self.config.name}: {exc}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
