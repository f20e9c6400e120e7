"""Driving load at a target and measuring it: the wrk and the asyncio + aiohttp load
generators, one measured point (throughput, latency, CPU per request) and the median of
several rounds."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loadtests.bench.common import (
    DEFAULT_REQUEST,
    HarnessError,
    Request,
    session_id,
)
from loadtests.bench.procs import Processes, cpu_seconds, system_busy
from loadtests.bench.servers import Target

if TYPE_CHECKING:
    import aiohttp

# --------------------------------------------------------------------------------------------
# Load generators
# --------------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: int
    non_2xx: int


WRK_SCRIPT = """
local n = %(sessions)d
local reqs = {}
local i = 0
local body = %(body)s
local build = function(k)
  local headers = {}
%(headers)s
  headers["X-Checkout-Session"] = string.format("u_%%024x", k - 1)
  return wrk.format("%(method)s", "%(path)s", headers, body)
end
request = function()
  i = i %% n + 1
  local r = reqs[i]
  if r == nil then  -- built on first use: a big rotation costs no start-up
    r = build(i)
    reqs[i] = r
  end
  return r
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"p50_us\\": %%d, " ..
    "\\"p99_us\\": %%d, \\"mean_us\\": %%.1f, \\"max_us\\": %%d, \\"connect\\": %%d, " ..
    "\\"read\\": %%d, \\"write\\": %%d, \\"timeout\\": %%d, \\"status\\": %%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, latency.max, e.connect, e.read, e.write, e.timeout, e.status))
end
"""


def _lua_string(text: str) -> str:
    """A Lua long-bracket string literal holding `text` as it is."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def wrk_script(request: Request) -> str:
    """The wrk Lua script sending `request`, its session rotating (each built once)."""
    headers = "\n".join(f"  headers[ {_lua_string(k)} ] = {_lua_string(v)}"
                        for k, v in request.headers.items())
    return WRK_SCRIPT % {
        "sessions": request.sessions, "headers": headers, "method": request.method,
        "path": request.path,
        "body": _lua_string(request.body.decode()) if request.body else "nil",
    }


class WrkLoad:
    name = "wrk"

    def __init__(self, binary: str, procs: Processes, request: Request = DEFAULT_REQUEST,
                 script_name: str = "bench.lua") -> None:
        self.binary = binary
        self.procs = procs
        self.request = request
        self.script = procs.workdir / script_name
        self.script.write_text(wrk_script(request))

    def run(self, port: int, concurrency: int, duration: float) -> LoadResult:
        seconds = max(1, math.ceil(duration))  # wrk takes whole seconds
        cmd = [self.binary, "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "5s",
               "-s", str(self.script), f"http://127.0.0.1:{port}{self.request.path}"]
        child = self.procs.start("wrk", cmd)
        try:
            child.proc.wait(seconds + 30)
        except subprocess.TimeoutExpired as exc:
            raise HarnessError("wrk did not finish in time") from exc
        finally:
            self.procs.stop(child)
        out = child.log_path.read_text(errors="replace")
        line = next((ln for ln in out.splitlines() if ln.startswith("BENCHJSON ")), None)
        if child.proc.returncode != 0 or line is None:
            raise HarnessError(f"wrk failed ({child.proc.returncode}):\n{out[-2000:]}")
        data = json.loads(line.removeprefix("BENCHJSON "))
        secs = data["duration_us"] / 1e6
        errors = data["connect"] + data["read"] + data["write"] + data["timeout"]
        return LoadResult(
            requests=data["requests"], seconds=secs, p50_ms=data["p50_us"] / 1000,
            p99_ms=data["p99_us"] / 1000, mean_ms=data["mean_us"] / 1000,
            max_ms=data["max_us"] / 1000, errors=errors, non_2xx=data["status"],
        )


class PythonLoad:
    """asyncio + aiohttp client: `concurrency` workers, one keep-alive connection each."""

    name = "python"

    def __init__(self, request: Request = DEFAULT_REQUEST) -> None:
        self.request = request

    def run(self, port: int, concurrency: int, duration: float) -> LoadResult:
        try:
            import uvloop
            factory: Any = uvloop.new_event_loop
        except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
            factory = None
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(self._run(port, concurrency, duration))

    async def _run(self, port: int, concurrency: int, duration: float) -> LoadResult:
        import aiohttp

        url = f"http://127.0.0.1:{port}{self.request.path}"
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency,
                                         keepalive_timeout=60)
        async with aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=10),
        ) as session:
            latencies, errors, non_2xx, seconds = await self._drive(
                session, url, concurrency, duration, self.request)
        return summarize(latencies, seconds, errors, non_2xx)

    @staticmethod
    async def _drive(session: aiohttp.ClientSession, url: str, concurrency: int,
                     duration: float, request: Request = DEFAULT_REQUEST,
                     ) -> tuple[list[float], int, int, float]:
        """`concurrency` workers for `duration` seconds: (latencies, errors, non-2xx, seconds)."""
        import aiohttp

        sessions = request.sessions
        headers = [{**request.headers, "X-Checkout-Session": session_id(i)}
                   for i in range(sessions)]
        method, body = request.method, request.body or None
        counter = itertools.count()
        latencies: list[float] = []
        errors = non_2xx = 0

        async def worker(end: float) -> None:
            nonlocal errors, non_2xx
            clock = time.perf_counter
            while True:
                t0 = clock()
                if t0 >= end:
                    return
                try:
                    async with session.request(
                            method, url, data=body,
                            headers=headers[next(counter) % sessions]) as response:
                        await response.read()
                        status = response.status
                except (aiohttp.ClientError, OSError, TimeoutError):
                    errors += 1
                    await asyncio.sleep(0.01)
                    continue
                latencies.append(clock() - t0)
                if not 200 <= status < 300:
                    non_2xx += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(started + duration) for _ in range(concurrency)))
        return latencies, errors, non_2xx, time.perf_counter() - started


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.nan
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


def summarize(latencies: list[float], seconds: float, errors: int, non_2xx: int) -> LoadResult:
    ordered = sorted(latencies)
    mean = sum(ordered) / len(ordered) if ordered else math.nan
    return LoadResult(
        requests=len(ordered), seconds=seconds, p50_ms=percentile(ordered, 50) * 1000,
        p99_ms=percentile(ordered, 99) * 1000, mean_ms=mean * 1000,
        max_ms=(ordered[-1] * 1000) if ordered else math.nan, errors=errors, non_2xx=non_2xx,
    )


# --------------------------------------------------------------------------------------------
# Measured points
# --------------------------------------------------------------------------------------------

@dataclass
class Point:
    target: str
    concurrency: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: int
    non_2xx: int
    cpu_us_per_request: float | None  # CPU of the target's own process(es) per request
    busy_cores: float | None = None  # the whole machine's busy CPUs during the point
    rounds: int = 1  # several rounds: medians of rps, p50, p99 and CPU
    rps_rounds: list[int] = field(default_factory=list)
    cpu_us_per_request_min: float | None = None  # the cheapest round: least disturbed


def measure(load: WrkLoad | PythonLoad, target: Target, concurrency: int, duration: float,
            warmup: float) -> Point:
    if warmup > 0:
        load.run(target.port, concurrency, warmup)
    pid = target.child.proc.pid if target.child is not None else None
    cpu_before = cpu_seconds(pid) if pid else None
    busy_before = system_busy()
    result = load.run(target.port, concurrency, duration)
    busy_after = system_busy()
    cpu_after = cpu_seconds(pid) if pid else None
    cpu = None
    if cpu_before is not None and cpu_after is not None and result.requests:
        cpu = (cpu_after - cpu_before) / result.requests * 1e6
    busy = None
    if busy_before and busy_after and busy_after[1] > busy_before[1]:
        busy = (busy_after[0] - busy_before[0]) / (busy_after[1] - busy_before[1])
    rps = result.requests / result.seconds if result.seconds > 0 else 0.0
    return Point(target.name, concurrency, result.requests, result.seconds, rps, result.p50_ms,
                 result.p99_ms, result.mean_ms, result.max_ms, result.errors, result.non_2xx,
                 cpu, busy)


def combine(rounds: list[Point]) -> Point:
    """Several rounds of one target and concurrency: medians, errors and requests summed."""
    if len(rounds) == 1:
        return rounds[0]

    def med(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    first = rounds[0]
    return Point(
        first.target, first.concurrency, sum(p.requests for p in rounds),
        sum(p.seconds for p in rounds), med([p.rps for p in rounds]) or 0.0,
        med([p.p50_ms for p in rounds]) or math.nan, med([p.p99_ms for p in rounds]) or math.nan,
        med([p.mean_ms for p in rounds]) or math.nan, max(p.max_ms for p in rounds),
        sum(p.errors for p in rounds), sum(p.non_2xx for p in rounds),
        med([p.cpu_us_per_request for p in rounds]), med([p.busy_cores for p in rounds]),
        len(rounds), [round(p.rps) for p in rounds],
        min((p.cpu_us_per_request for p in rounds if p.cpu_us_per_request is not None),
            default=None),
    )
