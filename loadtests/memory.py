"""Memory under load: the full proxy's RSS and file descriptors while every request brings a
customer it has never seen.

It starts an upstream (nginx when installed, else a Python one) and the proxy exactly as
`strangler serve` runs it (rules/checkout.yaml, SQLite control store, embedded telemetry),
then sends requests through the `warranties-pilot` rule, each with a new
`X-Checkout-Session` unit, as fast as the proxy answers (wrk when installed, else Python),
for `--duration` seconds. Every new unit is a sticky assignment and a telemetry unit: the
worst case for memory. Every `--interval` seconds it prints the requests so far and the
proxy's RSS (VmRSS) and open descriptors; at the end the peak, the growth over the second
half of the run (after the bounded stores have filled), and PASS/FAIL against `--max-rss-mb`
and `--max-growth-mb`. Exit 1 on FAIL.

    python -m loadtests.memory --duration 600            # 10 minutes (docs/benchmarks.md)
    python -m loadtests.memory --duration 60 --interval 5
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from loadtests.bench import (
    FUNNEL_HEADERS,
    REQUEST_PATH,
    HarnessError,
    Processes,
    cpu_split,
    log,
    nginx_binary,
    start_full,
    start_upstream,
)

WRK_UNIQUE = """
local thread_id = 0
local counter = 0
setup = function(thread)
  thread:set("thread_id", thread_id)
  thread_id = thread_id + 1
end
request = function()
  counter = counter + 1
  local headers = {}
  headers["X-Checkout-Funnel"] = "%(funnel)s"
  headers["X-Country"] = "%(country)s"
  headers["X-Checkout-Session"] = string.format("u_%%08x%%016x", %(run)d + thread_id, counter)
  return wrk.format("GET", "%(path)s", headers)
end
done = function(summary, latency, requests)
  io.write(string.format("MEMJSON {\\"requests\\": %%d, \\"errors\\": %%d, \\"non_2xx\\": %%d}\\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, summary.errors.status))
end
"""


@dataclass
class Sample:
    seconds: float
    requests: int
    errors: int
    rss_mb: float
    fds: int


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise HarnessError(f"no VmRSS for pid {pid}")


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wrk_segment(procs: Processes, wrk: str, script: Path, port: int, concurrency: int,
                seconds: int) -> tuple[int, int]:
    cmd = [wrk, "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "5s", "-s",
           str(script), f"http://127.0.0.1:{port}{REQUEST_PATH}"]
    child = procs.start("wrk", cmd)
    try:
        child.proc.wait(seconds + 30)
    finally:
        procs.stop(child)
    out = child.log_path.read_text(errors="replace")
    line = next((ln for ln in out.splitlines() if ln.startswith("MEMJSON ")), None)
    if line is None:
        raise HarnessError(f"wrk failed:\n{out[-2000:]}")
    data = json.loads(line.removeprefix("MEMJSON "))
    return int(data["requests"]), int(data["errors"]) + int(data["non_2xx"])


def python_segment(port: int, concurrency: int, seconds: float, first: int) -> tuple[int, int]:
    import aiohttp

    async def run() -> tuple[int, int]:
        counter = itertools.count(first)
        done = errors = 0
        url = f"http://127.0.0.1:{port}{REQUEST_PATH}"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
            async def worker(end: float) -> None:
                nonlocal done, errors
                while time.monotonic() < end:
                    headers = {**FUNNEL_HEADERS, "X-Checkout-Session": f"u_{next(counter):024x}"}
                    try:
                        async with session.get(url, headers=headers) as response:
                            await response.read()
                            errors += response.status >= 300
                    except (aiohttp.ClientError, OSError):
                        errors += 1
                    done += 1
            end = time.monotonic() + seconds
            await asyncio.gather(*(worker(end) for _ in range(concurrency)))
        return done, errors

    return asyncio.run(run())


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.memory", description=(
        "RSS and file descriptors of the full proxy under load where every request is a new "
        "customer (see the module docstring)."))
    parser.add_argument("--duration", type=int, default=600, help="seconds of load")
    parser.add_argument("--interval", type=int, default=30, help="seconds between samples")
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--max-rss-mb", type=float, default=150.0)
    parser.add_argument("--max-growth-mb", type=float, default=10.0,
                        help="allowed RSS growth over the second half of the run")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    if args.duration < 2 * args.interval:
        parser.error("--duration must be at least two --interval")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    wrk = shutil.which("wrk") if args.loadgen != "python" else None
    if args.loadgen == "wrk" and not wrk:
        raise SystemExit("--loadgen wrk: wrk is not installed")
    pin = cpu_split()
    if pin is not None:
        os.sched_setaffinity(0, pin[1])
    workdir = Path(tempfile.mkdtemp(prefix="strangler-memory-"))
    procs = Processes(workdir, pin)
    samples: list[Sample] = []
    try:
        _, upstream = start_upstream(procs, "nginx" if nginx_binary() else "python")
        full = start_full(procs, upstream)
        pid = full.child.proc.pid  # `strangler serve` with one worker serves in-process
        script = workdir / "memory.lua"
        run_id = int(time.time()) % 0x1000000 * 256
        log(f"memory: proxy pid {pid}, loadgen {'wrk' if wrk else 'python'}, "
            f"c={args.concurrency}, {args.duration} s, a sample every {args.interval} s")
        samples.append(Sample(0.0, 0, 0, proc_rss_mb(pid), proc_fds(pid)))
        started = time.monotonic()
        total = errors = 0
        while (elapsed := time.monotonic() - started) < args.duration - 0.5:
            seconds = int(min(args.interval, max(1, args.duration - elapsed)))
            if wrk:  # units never repeat: each segment has its own prefix
                script.write_text(WRK_UNIQUE % {
                    "funnel": FUNNEL_HEADERS["X-Checkout-Funnel"],
                    "country": FUNNEL_HEADERS["X-Country"], "path": REQUEST_PATH,
                    "run": run_id + len(samples) * 16,
                })
                n, e = wrk_segment(procs, wrk, script, full.port, args.concurrency, seconds)
            else:
                n, e = python_segment(full.port, args.concurrency, seconds, total)
            total, errors = total + n, errors + e
            sample = Sample(round(time.monotonic() - started, 1), total, errors,
                            proc_rss_mb(pid), proc_fds(pid))
            samples.append(sample)
            print(f"{sample.seconds:7.1f} s  {sample.requests:9d} requests  "
                  f"{sample.errors:5d} errors  RSS {sample.rss_mb:6.1f} MB  "
                  f"{sample.fds:4d} fds", flush=True)
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return report(samples, args)


def report(samples: list[Sample], args: argparse.Namespace) -> int:
    half = samples[len(samples) // 2]
    last = samples[-1]
    peak = max(s.rss_mb for s in samples)
    growth = last.rss_mb - half.rss_mb
    fd_growth = last.fds - half.fds
    rate = last.requests / last.seconds if last.seconds else 0.0
    checks = [
        (f"peak RSS {peak:.1f} MB <= {args.max_rss_mb:.0f} MB", peak <= args.max_rss_mb),
        (f"RSS growth over the second half {growth:+.1f} MB <= {args.max_growth_mb:.0f} MB",
         growth <= args.max_growth_mb),
        (f"descriptor growth over the second half {fd_growth:+d} <= 10", fd_growth <= 10),
        (f"errors {last.errors} of {last.requests} requests", last.errors == 0),
    ]
    print(f"\n{last.requests} requests ({rate:.0f}/s), each a new unit; RSS at start "
          f"{samples[0].rss_mb:.1f} MB, at half time {half.rss_mb:.1f} MB, at the end "
          f"{last.rss_mb:.1f} MB, peak {peak:.1f} MB")
    for text, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {text}")
    if args.json_out:
        args.json_out.write_text(json.dumps({
            "samples": [asdict(s) for s in samples], "peak_rss_mb": peak,
            "growth_second_half_mb": growth, "checks": {t: ok for t, ok in checks},
        }, indent=2))
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as exc:
        print(f"memory: {exc}", file=sys.stderr)
        sys.exit(2)
    except subprocess.SubprocessError as exc:
        print(f"memory: {exc}", file=sys.stderr)
        sys.exit(2)
