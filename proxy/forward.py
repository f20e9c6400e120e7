"""Forwarding to a backend: pooled keep-alive connections, streaming both ways.

Error tree, mapped from aiohttp at this boundary:

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

import aiohttp


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
        self.too_large = False

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
                self.too_large = True
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
    """One backend: a pooled aiohttp session that never stores cookies or decompresses."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.base = config.url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.config.pool_size, limit_per_host=self.config.pool_size,
                keepalive_timeout=30, ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self.config.connect_timeout,
                    sock_connect=self.config.connect_timeout,
                    sock_read=self.config.read_timeout,
                ),
            )
        return self._session

    async def send(
        self, method: str, path_qs: str, headers: list[tuple[str, str]],
        body: RequestBody | None,
    ) -> aiohttp.ClientResponse:
        """Send the request; the caller must `release()` the response when done."""
        try:
            return await self.session().request(
                method, self.base + path_qs, headers=headers,
                data=body.__aiter__() if body is not None else None,
                allow_redirects=False, compress=None,
            )
        except (BodyTooLarge, ClientGone):
            raise
        except aiohttp.ConnectionTimeoutError as exc:
            raise UpstreamUnreachable(f"{self.config.name}: connect timeout") from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamUnreachable(f"{self.config.name}: {exc.os_error}") from exc
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{self.config.name}: no response in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            if body is not None and body.too_large:
                raise BodyTooLarge() from exc
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, (BodyTooLarge, ClientGone)):
                raise cause from exc
            raise UpstreamBroken(f"{self.config.name}: {exc!r}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
