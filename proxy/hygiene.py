"""Request hygiene in the app: framing checks and body deadlines.

The server protocol (`proxy.server_protocol`) rejects malformed requests before the app
sees them; `framing_problem` checks again what the forwarding path relies on, so that a
change of server or parser leniency can never turn into request smuggling. It is one pass
over the header list and returns a reason, or None for a well-framed request.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from proxy.forward import ClientGone

Headers = list[tuple[bytes, bytes]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

_FORBIDDEN_IN_VALUE = re.compile(rb"[\r\n\x00]")


class BodyTimeout(ClientGone):
    """The client did not send its body in time (idle too long, or too slow overall)."""


def framing_problem(http_version: str, headers: Headers) -> str | None:
    """Why a request's framing is unsafe to forward, or None."""
    lengths = 0
    encodings = 0
    for name, value in headers:
        if _FORBIDDEN_IN_VALUE.search(value):
            return "a header value contains CR, LF or NUL"
        if name == b"content-length":
            lengths += 1
            if not value.isdigit():
                return "invalid Content-Length"
        elif name == b"transfer-encoding":
            encodings += 1
            if value.strip(b" \t").lower() != b"chunked":
                return "unsupported Transfer-Encoding (only 'chunked' is accepted)"
    if lengths > 1:
        return "more than one Content-Length"
    if encodings > 1:
        return "more than one Transfer-Encoding"
    if lengths and encodings:
        return "both Content-Length and Transfer-Encoding"
    if encodings and http_version == "1.0":
        return "Transfer-Encoding in an HTTP/1.0 request"
    return None


def timed_receive(receive: Receive, idle: float, total: float) -> Receive:
    """`receive` that raises BodyTimeout when no body message arrives within `idle`
    seconds, or when the whole body takes longer than `total` seconds."""
    deadline = time.monotonic() + total

    async def receive_in_time() -> dict[str, Any]:
        budget = min(idle, deadline - time.monotonic())
        if budget <= 0:
            raise BodyTimeout()
        try:
            async with asyncio.timeout(budget):
                return await receive()
        except TimeoutError:
            raise BodyTimeout() from None

    return receive_in_time
