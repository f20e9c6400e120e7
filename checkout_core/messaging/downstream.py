"""The downstream order system port, and its HTTP adapter.

    DownstreamError
    ├── DownstreamRetryable   timeouts, connection errors, 408/425/429, 5xx: try again later
    └── DownstreamRejected    any other 4xx: the message itself is bad (poison)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import httpx

RETRYABLE_STATUSES = frozenset({408, 425, 429})


class DownstreamError(Exception):
    pass


class DownstreamRetryable(DownstreamError):
    pass


class DownstreamRejected(DownstreamError):
    pass


class Downstream(Protocol):
    async def push_order(self, idempotency_key: str, order: Mapping[str, Any]) -> None: ...


class HttpDownstream:
    """POSTs orders to `<base>/orders` with an `Idempotency-Key` header."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def push_order(self, idempotency_key: str, order: Mapping[str, Any]) -> None:
        try:
            response = await self.client.post(
                "/orders", json=dict(order), headers={"Idempotency-Key": idempotency_key}
            )
        except httpx.HTTPError as exc:
            raise DownstreamRetryable(f"{type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status in RETRYABLE_STATUSES or status >= 500:
            raise DownstreamRetryable(f"HTTP {status}")
        if status >= 400:
            raise DownstreamRejected(f"HTTP {status}: {response.text[:200]}")
