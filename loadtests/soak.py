"""Soak: steady checkout load for a long while, watching errors, memory and file descriptors.

By default it starts the stack on loopback (the checkout core, the legacy stub and the proxy
as `strangler serve` runs it, rules/checkout.yaml, state in a temporary directory), or it
targets a running proxy (`--url`, plus `--pid NAME=PID` for the processes to watch). Threads
run whole checkouts (cart, item, checkout, order) at a steady request rate. Every
`--interval` seconds it prints one row: requests, errors, latency, and for each watched
process its RSS (VmRSS from /proc/PID/status) and open file descriptors (/proc/PID/fd).
At the end it prints the growth of RSS and FDs from the first row (after warm-up) to the
last, and exits 1 if errors or growth went over the limits given.

Examples::

    python -m loadtests.soak --duration 600                    # 10 minutes, 40 req/s
    python -m loadtests.soak --duration 3600 --rate 100 --interval 30 --json-out soak.json
    python -m loadtests.soak --url http://127.0.0.1:8080 --pid proxy=12345 --duration 300
    python -m loadtests.soak --duration 600 --max-error-rate 0.001 --max-rss-growth-mb 50 \\
        --max-fd-growth 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
ADDRESS = {"name": "Soak", "line1": "1 Main St", "city": "Cork", "postal_code": "T12",
           "country": "IE"}


# -- the processes --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def strangler() -> list[str]:
    exe = shutil.which("strangler", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "cli.main"]


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


@contextlib.contextmanager
def stack(workdir: Path, legacy_latency_ms: int) -> Iterator[tuple[str, dict[str, int]]]:
    """Core, legacy stub and proxy on free ports: (proxy URL, {name: pid})."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STRANGLER_", "CHECKOUT_CORE_", "LEGACY_STUB_"))}
    core, legacy, proxy = free_port(), free_port(), free_port()
    specs = {
        "core": ([sys.executable, "-m", "checkout_core", "--host", "127.0.0.1", "--port",
                  str(core), "--db-path", str(workdir / "core.sqlite3")], {}, core, "/healthz"),
        "legacy": ([sys.executable, "-m", "legacy_stub", "--host", "127.0.0.1", "--port",
                    str(legacy)], {"LEGACY_STUB_LATENCY_MS": str(legacy_latency_ms),
                                   "LEGACY_STUB_LATENCY_JITTER_MS": "0",
                                   "LEGACY_STUB_DECLINE_RATE": "0"}, legacy, "/healthz"),
        "proxy": ([*strangler(), "serve", "--port", str(proxy),
                   "--core-url", f"http://127.0.0.1:{core}",
                   "--legacy-url", f"http://127.0.0.1:{legacy}",
                   "--rules", str(REPO / "rules" / "checkout.yaml"),
                   "--db-path", str(workdir / "strangler.sqlite3")],
                  # the customers play a CDN's: X-Country from loopback is believed
                  {"STRANGLER_LOG_LEVEL": "warning", "STRANGLER_TRUST_COUNTRY_HEADERS": "always"},
                  proxy, "/_strangler/healthz"),
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, (args, extra, port, ready) in specs.items():
            log = (workdir / f"{name}.log").open("ab")
            procs[name] = subprocess.Popen(args, env={**env, **extra}, cwd=REPO,
                                           stdout=log, stderr=subprocess.STDOUT)
            wait_up(f"http://127.0.0.1:{port}{ready}", procs[name])
        yield f"http://127.0.0.1:{proxy}", {name: p.pid for name, p in procs.items()}
    finally:
        for proc in reversed(list(procs.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


# -- the load -------------------------------------------------------------------------------

@dataclass
class Window:
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)


class Load:
    """Threads running checkouts through the proxy at `rate` requests per second in all."""

    def __init__(self, url: str, rate: float, threads: int) -> None:
        self.url = url
        self.interval = threads / rate
        self.threads = threads
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.window = Window()
        self.total = Window()
        self.workers = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self._local = threading.local()  # each thread's next send time

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def finish(self) -> None:
        self.stop.set()
        for worker in self.workers:
            worker.join(10)

    def take(self) -> Window:
        with self.lock:
            window, self.window = self.window, Window()
        return window

    def _record(self, status: int | None, seconds: float) -> None:
        error = status is None or status >= 500
        key = str(status) if status is not None else "transport"
        with self.lock:
            for w in (self.window, self.total):
                w.requests += 1
                w.errors += error
                w.statuses[key] = w.statuses.get(key, 0) + 1
            self.window.latencies.append(seconds)

    def _send(self, client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
        next_at = getattr(self._local, "next_at", time.monotonic())
        delay = next_at - time.monotonic()
        if delay > 0:
            self.stop.wait(delay)
        self._local.next_at = max(next_at, time.monotonic() - 1) + self.interval
        started = time.monotonic()
        try:
            response = client.request(method, path, **kwargs)
        except httpx.HTTPError:
            self._record(None, time.monotonic() - started)
            return None
        self._record(response.status_code, time.monotonic() - started)
        return response.json() if response.status_code in (200, 201) else None

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop.is_set():
                self._checkout(client)

    def _checkout(self, client: httpx.Client) -> None:
        headers = {"X-Checkout-Funnel": "warranties", "X-Country": "IE",
                   "X-Checkout-Session": f"soak-{uuid.uuid4().hex}"}
        cart = self._send(client, "POST", "/carts", headers=headers,
                          json={"country": "IE", "currency": "EUR"})
        if cart is None or self.stop.is_set():
            return
        cart_id = cart["id"]
        if self._send(client, "POST", f"/carts/{cart_id}/items", headers=headers,
                      json={"sku": "WR-CARE-2Y", "quantity": 1}) is None:
            return
        self._send(client, "GET", f"/carts/{cart_id}", headers=headers)
        checkout = self._send(client, "POST", f"/carts/{cart_id}/checkout", headers=headers,
                              json={"email": "soak@example.com", "shipping_address": ADDRESS})
        if checkout is None or self.stop.is_set():
            return
        order = self._send(client, "POST", f"/checkouts/{checkout['id']}/orders",
                           headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
                           json={"payment": {"method": "card", "token": "tok_visa"}})
        if order is not None:
            self._send(client, "GET", f"/orders/{order['id']}", headers=headers)


# -- reporting ------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Sample:
    at: float
    requests: int
    errors: int
    p50_ms: float
    p95_ms: float
    processes: dict[str, tuple[int | None, int | None]]  # name -> (RSS KiB, FDs)


def header(names: list[str]) -> str:
    cells = "".join(f" | {name[:10]:>10} MB   fds" for name in names)
    return f"{'t (s)':>6} {'reqs':>6} {'rps':>6} {'errs':>5} {'p50ms':>7} {'p95ms':>7}{cells}"


def row(sample: Sample, seconds: float) -> str:
    cells = ""
    for rss, fds in sample.processes.values():
        mb = f"{rss / 1024:.1f}" if rss is not None else "-"
        cells += f" | {mb:>13} {fds if fds is not None else '-':>5}"
    return (f"{sample.at:6.0f} {sample.requests:6d} {sample.requests / seconds:6.1f} "
            f"{sample.errors:5d} {sample.p50_ms:7.1f} {sample.p95_ms:7.1f}{cells}")


def growth(samples: list[Sample]) -> dict[str, dict[str, float | None]]:
    first, last = samples[0], samples[-1]
    out: dict[str, dict[str, float | None]] = {}
    for name in first.processes:
        (rss0, fd0), (rss1, fd1) = first.processes[name], last.processes[name]
        peak = max((s.processes[name][0] or 0) for s in samples)
        out[name] = {
            "rss_first_mb": rss0 / 1024 if rss0 else None,
            "rss_last_mb": rss1 / 1024 if rss1 else None,
            "rss_peak_mb": peak / 1024,
            "rss_growth_mb": (rss1 - rss0) / 1024 if rss0 and rss1 else None,
            "fds_first": fd0, "fds_last": fd1,
            "fd_growth": fd1 - fd0 if fd0 is not None and fd1 is not None else None,
        }
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600, help="seconds of load")
    parser.add_argument("--rate", type=float, default=40, help="requests per second, all told")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--interval", type=float, default=10, help="seconds between rows")
    parser.add_argument("--url", help="a running proxy; default: start the stack")
    parser.add_argument("--pid", action="append", default=[], metavar="NAME=PID",
                        help="a process to watch (with --url)")
    parser.add_argument("--legacy-latency-ms", type=int, default=20)
    parser.add_argument("--json-out", type=Path, help="write the samples and summary here")
    parser.add_argument("--max-error-rate", type=float, help="exit 1 above this share")
    parser.add_argument("--max-rss-growth-mb", type=float, help="exit 1 above, any process")
    parser.add_argument("--max-fd-growth", type=int, help="exit 1 above, any process")
    return parser.parse_args(argv)


def soak(args: argparse.Namespace, url: str, pids: dict[str, int]) -> int:
    load = Load(url, args.rate, args.threads)
    names = list(pids)
    print(f"soak: {url}, {args.rate:g} req/s, {args.duration:g} s, watching "
          + ", ".join(f"{n} (pid {p})" for n, p in pids.items()), flush=True)
    print(header(names), flush=True)
    samples: list[Sample] = []
    started = last = time.monotonic()
    load.start()
    try:
        while (now := time.monotonic()) < started + args.duration:
            time.sleep(min(args.interval, started + args.duration - now))
            window, now = load.take(), time.monotonic()
            sample = Sample(now - started, window.requests, window.errors,
                            percentile(window.latencies, 0.5) * 1000,
                            percentile(window.latencies, 0.95) * 1000,
                            {n: (rss_kib(p), open_fds(p)) for n, p in pids.items()})
            samples.append(sample)
            print(row(sample, now - last), flush=True)
            last = now
    finally:
        load.finish()
    return summarize(args, load.total, samples)


def summarize(args: argparse.Namespace, total: Window, samples: list[Sample]) -> int:
    rate = total.errors / total.requests if total.requests else 0.0
    grown = growth(samples) if samples else {}
    print(f"\nsummary: {total.requests} requests, {total.errors} errors ({rate:.4%}), "
          f"statuses {dict(sorted(total.statuses.items()))}")
    for name, g in grown.items():
        print(f"  {name:8} RSS {g['rss_first_mb'] or 0:.1f} -> {g['rss_last_mb'] or 0:.1f} MB "
              f"(growth {g['rss_growth_mb'] or 0:+.1f} MB, peak {g['rss_peak_mb']:.1f} MB), "
              f"FDs {g['fds_first']} -> {g['fds_last']} (growth {g['fd_growth']:+d})"
              if g["fd_growth"] is not None else f"  {name:8} process gone")
    failures = []
    if args.max_error_rate is not None and rate > args.max_error_rate:
        failures.append(f"error rate {rate:.4%} > {args.max_error_rate:.4%}")
    for name, g in grown.items():
        if args.max_rss_growth_mb is not None and (g["rss_growth_mb"] or 0) > args.max_rss_growth_mb:
            failures.append(f"{name} RSS grew {g['rss_growth_mb']:.1f} MB")
        if args.max_fd_growth is not None and (g["fd_growth"] or 0) > args.max_fd_growth:
            failures.append(f"{name} FDs grew by {g['fd_growth']}")
    if args.json_out:
        args.json_out.write_text(json.dumps({
            "samples": [asdict(s) for s in samples], "growth": grown,
            "requests": total.requests, "errors": total.errors, "statuses": total.statuses,
            "failures": failures}, indent=2))
    for failure in failures:
        print(f"FAIL: {failure}")
    print("PASS" if not failures else "FAILED")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.url:
        pids = dict(entry.split("=", 1) for entry in args.pid)
        return soak(args, args.url.rstrip("/"), {n: int(p) for n, p in pids.items()})
    with tempfile.TemporaryDirectory(prefix="soak-") as workdir, \
            stack(Path(workdir), args.legacy_latency_ms) as (url, pids):
        return soak(args, url, pids)


if __name__ == "__main__":
    sys.exit(main())
