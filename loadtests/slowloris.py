"""Slow request bodies against the proxy: do other customers still get served?

It starts an upstream (nginx when installed, else a Python one) and the proxy exactly as
`strangler serve` runs it (rules/checkout.yaml, SQLite control store, default settings:
`STRANGLER_POOL_SIZE` 256), then opens `--clients` (300) slowloris connections: each sends
a `POST /carts` head declaring a `--body-bytes` body, then one body byte every `--interval`
(3) seconds, and connects again whenever the proxy cuts it off. Once all are trickling,
normal customers send `GET /carts` through the warranties funnel at `--rate` requests a
second over `--connections` keep-alive connections for `--duration` seconds; each
request's latency counts from the moment it was due (no coordinated omission). Everything
is on loopback and bounded in time.

Before request bodies were read ahead (`STRANGLER_BODY_BUFFER_BYTES`), each slow body held
one of the backend's pooled connections for as long as it trickled: with more slow clients
than the pool has connections, every other customer waited for one.

It prints the figures and PASS/FAIL for: p99 of the normal requests under `--max-p99-ms`
(50), and none failed. Exit 1 on FAIL.

    python -m loadtests.slowloris                          # 300 slow clients, 20 s
    python -m loadtests.slowloris --tree /tmp/old-copy     # the proxy of another checkout
    python -m loadtests.slowloris --clients 10 --duration 2 --interval 0.5   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loadtests.bench import (
    FUNNEL_HEADERS,
    REPO,
    REQUEST_PATH,
    HarnessError,
    Processes,
    log,
    nginx_binary,
    start_full,
    start_upstream,
)

REQUEST_TIMEOUT = 10.0  # a normal request slower than this counts as failed


@dataclass
class SlowStats:
    open: int = 0  # connections trickling right now
    connects: int = 0
    cut_off: int = 0  # connections the proxy ended (408, or closed)
    bytes_sent: int = 0


@dataclass
class Result:
    clients: int
    duration: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    slow_open_at_end: int
    slow_connects: int
    slow_cut_off: int
    error_samples: list[str] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=300, help="slowloris connections")
    parser.add_argument("--interval", type=float, default=3.0,
                        help="seconds between two body bytes of a slow client")
    parser.add_argument("--body-bytes", type=int, default=1000,
                        help="body length each slow client declares")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds of normal traffic, once every slow client trickles")
    parser.add_argument("--rate", type=float, default=200.0, help="normal requests a second")
    parser.add_argument("--connections", type=int, default=8,
                        help="keep-alive connections of the normal customers")
    parser.add_argument("--max-p99-ms", type=float, default=50.0)
    parser.add_argument("--upstream", choices=("auto", "nginx", "python"), default="auto")
    parser.add_argument("--tree", type=Path, default=REPO,
                        help="run the proxy from this copy of the repository")
    parser.add_argument("--json-out", type=Path)
    return parser.parse_args(argv)


# -- the slow clients ----------------------------------------------------------------------

async def slow_client(port: int, args: argparse.Namespace, stats: SlowStats,
                      stop: asyncio.Event, ready: asyncio.Event | None) -> None:
    """One slowloris: a POST head, then a byte every interval; again when cut off."""
    head = (f"POST {REQUEST_PATH} HTTP/1.1\r\nHost: shop.example\r\n"
            f"Content-Type: application/json\r\nContent-Length: {args.body_bytes}\r\n\r\n")
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await _pause(stop, args.interval)
            continue
        stats.connects += 1
        stats.open += 1
        try:
            writer.write(head.encode())
            await _trickle(reader, writer, args, stats, stop, ready)
            ready = None
        except OSError:
            pass
        finally:
            stats.open -= 1
            writer.close()
        if not stop.is_set():
            stats.cut_off += 1


async def _trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   args: argparse.Namespace, stats: SlowStats, stop: asyncio.Event,
                   ready: asyncio.Event | None) -> None:
    await asyncio.sleep(random.uniform(0, args.interval))  # spread over the interval
    for _ in range(args.body_bytes - 1):  # never the last byte: the body never completes
        writer.write(b" ")
        await writer.drain()
        stats.bytes_sent += 1
        if ready is not None:
            ready.set()
            ready = None
        if await _pause(stop, args.interval) or reader.at_eof():
            return  # (a write after the proxy cut us off fails: OSError)


async def _pause(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep, or return True at once when `stop` is set."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


# -- the normal customers ------------------------------------------------------------------

class Customer:
    """One keep-alive connection sending GET requests on a schedule."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        headers = "".join(f"{k}: {v}\r\n" for k, v in FUNNEL_HEADERS.items())
        self.request = (f"GET {REQUEST_PATH} HTTP/1.1\r\nHost: shop.example\r\n{headers}"
                        "X-Checkout-Session: u_{:024x}\r\n\r\n")

    async def get(self, unit: int) -> int:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(self.request.format(unit).encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def customers(port: int, args: argparse.Namespace) -> tuple[list[float], list[str]]:
    """Latencies (ms, from when each request was due) and the errors, for --duration s."""
    latencies: list[float] = []
    errors: list[str] = []
    period = args.connections / args.rate
    start = time.monotonic()

    async def run(index: int) -> None:
        customer = Customer(port)
        due = start + index * period / args.connections
        n = 0
        while due < start + args.duration:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    status = await customer.get(index * 10_000_000 + n)
                if status != 200:
                    errors.append(f"status {status}")
            except (OSError, TimeoutError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError, ValueError) as exc:
                errors.append(repr(exc))
                customer.close()
                customer = Customer(port)
            latencies.append((time.monotonic() - due) * 1000)
            n += 1
            due += period
        customer.close()

    await asyncio.gather(*(run(i) for i in range(args.connections)))
    return latencies, errors


# -- the run -------------------------------------------------------------------------------

async def attack(port: int, args: argparse.Namespace) -> Result:
    stats = SlowStats()
    stop = asyncio.Event()
    readies = [asyncio.Event() for _ in range(args.clients)]
    slow = [asyncio.create_task(slow_client(port, args, stats, stop, r)) for r in readies]
    try:
        async with asyncio.timeout(args.interval * 2 + 30):
            await asyncio.gather(*(r.wait() for r in readies))
        log(f"slowloris: {stats.open} slow clients trickling; normal traffic for "
            f"{args.duration:.0f} s at {args.rate:.0f}/s")
        latencies, errors = await customers(port, args)
        open_at_end = stats.open
    finally:
        stop.set()
        await asyncio.gather(*slow, return_exceptions=True)
    ordered = sorted(latencies) or [0.0]

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return Result(args.clients, args.duration, len(latencies), len(errors), round(pct(0.5), 2),
                  round(pct(0.99), 2), round(ordered[-1], 2), open_at_end, stats.connects,
                  stats.cut_off, errors[:5])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="strangler-slowloris-"))
    procs = Processes(workdir)
    kind = args.upstream if args.upstream != "auto" else (
        "nginx" if nginx_binary() else "python")
    try:
        _, upstream = start_upstream(procs, kind)
        full = start_full(procs, upstream, tree=args.tree.resolve())
        log(f"slowloris: proxy on port {full.port} ({full.description}), upstream {kind}")
        result = asyncio.run(attack(full.port, args))
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return report(result, args)


def report(result: Result, args: argparse.Namespace) -> int:
    checks = [
        (f"p99 of normal requests {result.p99_ms:.1f} ms < {args.max_p99_ms:.0f} ms",
         result.p99_ms < args.max_p99_ms),
        (f"failed normal requests: {result.errors} of {result.requests}",
         result.errors == 0 and result.requests > 0),
    ]
    print(f"{result.clients} slow clients (a body byte every {args.interval:g} s; "
          f"{result.slow_open_at_end} still trickling at the end, {result.slow_cut_off} cut "
          f"off by the proxy); {result.requests} normal requests in {result.duration:g} s: "
          f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, max {result.max_ms:.1f} ms, "
          f"{result.errors} failed")
    for sample in result.error_samples:
        print(f"  e.g. {sample}")
    for text, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {text}")
    if args.json_out:
        args.json_out.write_text(json.dumps(
            {**asdict(result), "checks": {t: ok for t, ok in checks}}, indent=2))
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as exc:
        print(f"slowloris: {exc}", file=sys.stderr)
        sys.exit(2)
