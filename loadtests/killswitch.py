"""Kill-switch propagation: from the store write of `strangler kill` until the last replica
routes to legacy.

Starts an upstream, N proxy replicas as `strangler serve` runs them (separate processes),
sharing Redis (pub/sub plus polling) or one SQLite file (polling), and repeats: clear the
switch, wait until every replica routes to core again, set the switch exactly as
`strangler kill` does (control.operations.kill on the same store), then probe every replica
continuously with real routed requests (a fresh unit each) until it answers legacy.
It prints p50, p99 and max of the time until the LAST replica obeyed, per mode, and also
times a few real `strangler kill` invocations end to end (process start included).

Examples::

    python -m loadtests.killswitch                       # both modes, 3 replicas, 50 trials
    python -m loadtests.killswitch --mode redis --trials 200 --redis-url redis://127.0.0.1:6379/9

Loopback only; every process it starts is stopped when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import aiohttp
import httpx

from control import operations as control
from control.store import ControlStore, open_store

RULES = """\
funnels:
  - name: warranties
    match: {header: warranties}
    salt: ks
    rules: [{id: all, countries: '*', percent: 100}]
"""
UPSTREAM = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextmanager
def process(args: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def strangler() -> list[str]:
    exe = shutil.which("strangler", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "cli.main"]


async def _until_legacy(session: aiohttp.ClientSession, url: str, started: float) -> float:
    while True:
        headers = {"X-Checkout-Funnel": "warranties",
                   "X-Checkout-Session": f"probe-{uuid.uuid4().hex}"}
        async with session.get(url + "/carts", headers=headers) as resp:
            await resp.read()
            if resp.headers.get("x-checkout-backend") == "legacy":
                return time.perf_counter() - started


def _reset(store: ControlStore) -> None:
    """Clear the warranties switch if a trial left it set (unkill refuses an unset one)."""
    if "warranties" in store.kill_switches():
        control.unkill(store, "warranties", actor="bench", reason="trial reset")


async def _trial(store: ControlStore, urls: list[str]) -> float:
    async with aiohttp.ClientSession() as session:
        _reset(store)
        deadline = time.monotonic() + 10
        while True:  # every replica routes to core again
            backends = []
            for url in urls:
                async with session.get(url + "/carts", headers={
                        "X-Checkout-Funnel": "warranties",
                        "X-Checkout-Session": f"probe-{uuid.uuid4().hex}"}) as resp:
                    backends.append(resp.headers.get("x-checkout-backend"))
            if all(b == "core" for b in backends):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("replicas did not go back to core")
            await asyncio.sleep(0.02)
        await asyncio.sleep(random.uniform(0.05, 0.5))  # kills do not come in step with polls
        started = time.perf_counter()
        await asyncio.to_thread(control.kill, store, "warranties", actor="bench",
                                reason="propagation trial")
        write_done = time.perf_counter() - started
        seen = await asyncio.gather(*(_until_legacy(session, u, started) for u in urls))
        return max(seen) - write_done  # from the moment the write committed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_mode(mode: str, replicas: int, trials: int, redis_url: str | None) -> dict[str, float]:
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.yaml"
        rules.write_text(RULES)
        (Path(tmp) / "upstream.py").write_text(UPSTREAM)
        up_port = free_port()
        stack.enter_context(process(
            [sys.executable, "-m", "uvicorn", "--app-dir", tmp, "upstream:app", "--port",
             str(up_port), "--log-level", "warning"]))
        upstream = f"http://127.0.0.1:{up_port}"
        wait_up(upstream)
        db = str(Path(tmp) / "control.sqlite3")
        store = open_store(redis_url if mode == "redis" else None, db)
        control.apply_rules_text(store, RULES, source="bench", actor="bench", reason="bench")
        urls = []
        for _ in range(replicas):
            port = free_port()
            args = [*strangler(), "serve", "--port", str(port), "--core-url", upstream,
                    "--legacy-url", upstream, "--db-path", db]
            if mode == "redis":
                args += ["--redis-url", str(redis_url)]
            stack.enter_context(process(args, {"STRANGLER_LOG_LEVEL": "warning"}))
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            wait_up(url + "/_strangler/healthz")
        results = [asyncio.run(_trial(store, urls)) * 1000 for _ in range(trials)]
        cli = []
        for _ in range(3):
            _reset(store)
            time.sleep(0.5)
            env = {**os.environ, "STRANGLER_DB_PATH": db}
            if mode == "redis":
                env["STRANGLER_REDIS_URL"] = str(redis_url)
            started = time.perf_counter()
            subprocess.run([*strangler(), "kill", "--funnel", "warranties", "--reason", "bench"],
                           env=env, check=True, capture_output=True)
            cli.append((time.perf_counter() - started) * 1000)
        store.close()
    return {"p50": statistics.median(results), "p99": percentile(results, 0.99),
            "max": max(results), "trials": trials, "cli_ms": statistics.median(cli)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["redis", "embedded", "both"], default="both")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL",
                                                              "redis://127.0.0.1:6379/13"))
    args = parser.parse_args(argv)
    logging.getLogger("strangler").setLevel(logging.ERROR)
    modes = ["redis", "embedded"] if args.mode == "both" else [args.mode]
    print(f"{'mode':<10} {'replicas':>8} {'trials':>6} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8}  {'strangler kill (process) ms':>28}")
    for mode in modes:
        r = run_mode(mode, args.replicas, args.trials, args.redis_url)
        print(f"{mode:<10} {args.replicas:>8} {r['trials']:>6} {r['p50']:>8.1f} {r['p99']:>8.1f} "
              f"{r['max']:>8.1f}  {r['cli_ms']:>28.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
