"""RFC 9457 problem details written straight to an ASGI `send`."""

from __future__ import annotations

import json
from typing import Any

PROBLEM_BASE = "https://checkout.example/problems/"

TITLES = {
    400: "Bad Request", 413: "Content Too Large", 431: "Request Header Fields Too Large",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}


def problem_body(status: int, slug: str, detail: str, instance: str) -> bytes:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug, "title": TITLES.get(status, "Error"), "status": status,
        "detail": detail, "instance": instance,
    }
    return json.dumps(body).encode()


async def send_problem(
    send: Any, status: int, slug: str, detail: str, instance: str,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = problem_body(status, slug, detail, instance)
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        *(extra_headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
