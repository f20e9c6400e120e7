"""Small real ASGI backends for proxy tests: they echo what they received and can misbehave."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class EchoBackend:
    """Answers every request with JSON describing it; paths under /_test/ misbehave."""

    name: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    force_status: int | None = None  # answer every request with this status

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        body = b""
        chunks = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            chunks += 1
            if not message.get("more_body"):
                break
        seen = {
            "backend": self.name, "method": scope["method"], "path": path,
            "raw_path": scope.get("raw_path", b"").decode("latin-1"),
            "query": scope["query_string"].decode(),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body_len": len(body), "body_chunks": chunks,
        }
        self.requests.append(seen)
        if path == "/_test/slow":
            await asyncio.sleep(2)
        if path == "/_test/drop":
            raise RuntimeError("backend dies mid-request")  # uvicorn closes the connection
        if path == "/_test/stream":
            await self._stream(send)
            return
        if path == "/_test/gzip":
            payload = gzip.compress(b"hello " * 100)
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/plain"), (b"content-encoding", b"gzip"),
                (b"content-length", str(len(payload)).encode()),
            ]})
            await send({"type": "http.response.body", "body": payload})
            return
        status = self.force_status or int(dict(scope["headers"]).get(b"x-test-status", b"0")) or (
            201 if scope["method"] == "POST" else 200)
        payload = json.dumps(seen).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"set-cookie", b"first=1; Path=/"), (b"set-cookie", b"second=2; Path=/"),
            (b"x-checkout-backend", b"spoofed-by-upstream"),
            (b"connection", b"x-upstream-private"), (b"x-upstream-private", b"secret"),
            (b"keep-alive", b"timeout=5"),
        ]})
        await send({"type": "http.response.body", "body": payload})

    @staticmethod
    async def _stream(send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for i in range(5):
            await send({"type": "http.response.body", "body": f"chunk-{i}\n".encode(),
                        "more_body": True})
            await asyncio.sleep(0.3)
        await send({"type": "http.response.body", "body": b""})


class HeldBackend:
    """Answers every request with `body` once the test releases it: `started` is set when
    one arrives, `release` lets the answer go (at the latest after a minute)."""

    def __init__(self, body: bytes = b"ok") -> None:
        self.body = body
        self.started = threading.Event()
        self.release = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.started.set()
        await asyncio.to_thread(self.release.wait, 60)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/plain"),
            (b"content-length", str(len(self.body)).encode())]})
        await send({"type": "http.response.body", "body": self.body})
