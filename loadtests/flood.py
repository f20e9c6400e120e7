"""Anonymous traffic at a proxy: every request from a client that keeps no cookie.

Each request carries a funnel and a country but no `checkout_session` cookie and no
`X-Checkout-Session` header, so the proxy mints a new unit for every one: the traffic of
crawlers, health probes, scripts, or an attacker. `--post-share` of them create a cart
(`POST /carts`), the others browse (`GET /carts`). Plain asyncio sockets on keep-alive
HTTP/1.1 connections (no client library), so one core drives a few thousand requests a
second. Prints one JSON line: requests, seconds, statuses.

    python -m loadtests.flood http://127.0.0.1:8080 --requests 30000 --connections 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class FloodResult:
    requests: int
    seconds: float
    statuses: dict[int, int]


def request_bytes(method: str, path: str, host: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if method == "POST":
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one response with a Content-Length body; its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _connection(host: str, port: int, requests: list[bytes], counter: Counter[int],
                      budget: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        i = 0
        while budget[0] > 0:
            budget[0] -= 1
            writer.write(requests[i % len(requests)])
            i += 1
            counter[await read_response(reader)] += 1
    finally:
        writer.close()
        await writer.wait_closed()


async def flood(url: str, total: int, connections: int = 16, post_share: float = 0.25,
                headers: dict[str, str] | None = None) -> FloodResult:
    """Send `total` cookie-less requests to `url` over `connections` connections."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    headers = headers or {"X-Checkout-Funnel": "warranties", "X-Country": "IE"}
    posts = round(post_share * 20)
    requests = [request_bytes("POST" if i < posts else "GET", "/carts", f"{host}:{port}",
                              headers) for i in range(20)]
    counter: Counter[int] = Counter()
    budget = [total]
    started = time.monotonic()
    await asyncio.gather(*(
        _connection(host, port, requests[i % 20:] + requests[:i % 20], counter, budget)
        for i in range(connections)
    ))
    return FloodResult(sum(counter.values()), time.monotonic() - started, dict(counter))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the proxy, e.g. http://127.0.0.1:8080")
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--post-share", type=float, default=0.25,
                        help="share of requests that create a cart (POST /carts)")
    parser.add_argument("--funnel", default="warranties")
    parser.add_argument("--country", default="IE")
    args = parser.parse_args(argv)
    result = asyncio.run(flood(
        args.url, args.requests, args.connections, args.post_share,
        {"X-Checkout-Funnel": args.funnel, "X-Country": args.country},
    ))
    json.dump({"requests": result.requests, "seconds": round(result.seconds, 3),
               "statuses": result.statuses}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
