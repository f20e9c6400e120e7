"""Throughput and latency of the full proxy against a minimal aiohttp proxy, nginx and direct.

One run starts, each in its own process (session), on loopback only:

- an upstream answering every request with a small JSON body: nginx when installed, else a
  raw-ASGI app on uvicorn + httptools + uvloop (`--upstream`);
- ``full``: the project's proxy exactly as ``strangler serve`` runs it (rules/checkout.yaml,
  decisions, stickiness, metrics; core and legacy both pointed at the upstream);
- ``baseline``: a minimal aiohttp proxy (aiohttp server + one pooled aiohttp client session,
  uvloop), the yardstick of the targets below;
- ``nginx``: nginx as a reverse proxy with upstream keep-alive (when installed);

and drives each, plus ``direct`` (the upstream itself), with the same load at each
concurrency: wrk when installed (a Lua script rotating 1000 sessions, with
``X-Checkout-Funnel: warranties`` and ``X-Country: IE`` so the proxy routes through a funnel
rule), otherwise an asyncio + aiohttp client load generator (`--loadgen python`).

It prints req/s, p50 and p99 per target and concurrency, the CPU each proxy process spent
per request, ratios to the baseline, and PASS/FAIL for the targets of the performance issue
(it reports, it never asserts; `--fail-on-miss` makes a missed target exit 1):

- full proxy >= 1.0x baseline throughput at c=32 and c=128;
- full proxy c128/c32 throughput ratio >= the baseline's;
- full proxy p99/p50 at c=32 <= the baseline's;
- full proxy c=1 p50 <= direct c=1 p50 + 0.3 ms.

Every process it starts is stopped when it ends, on error and on Ctrl-C (SIGINT, SIGTERM).

Examples::

    python -m loadtests.bench                              # 5 s per point, c=1,8,32,128
    python -m loadtests.bench --duration 10 --json-out /tmp/bench.json
    python -m loadtests.bench --loadgen python --upstream python --nginx off -c 1,8
    python -m loadtests.bench --targets full,baseline --profile /tmp/prof  # + py-spy at c=32
    python -m loadtests.bench --variant fast=/tmp/copy   # + a copy of the repo, proxy/ modified
    python -m loadtests.bench --pin off --targets full --workers 1,2 -c 32,128  # 1 vs 2 workers

The machine matters: load generator, proxy and upstream share its cores, so compare
targets within one run, not figures across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import itertools
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RULES_FILE = REPO / "rules" / "checkout.yaml"

# What the upstream answers: a small cart-like JSON document.
BODY = (b'{"id":"co_cart_0123456789abcdef","country":"IE","currency":"EUR","status":"open",'
        b'"items":[],"subtotal":0,"tax":0,"total":0}')
REQUEST_PATH = "/carts"  # a checkout route (the proxy forwards only those), no id: RULE
FUNNEL_HEADERS = {"X-Checkout-Funnel": "warranties", "X-Country": "IE"}
SESSIONS = 1000  # distinct X-Checkout-Session values, rotated request by request

TARGET_ORDER = ("direct", "baseline", "full", "nginx")
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "transfer-encoding", "upgrade",
})

# Thresholds of the performance issue.
MIN_THROUGHPUT_RATIO = 1.0
MAX_C1_OVERHEAD_MS = 0.3
C_MID, C_HIGH = 32, 128


def session_id(i: int) -> str:
    return f"u_{i:024x}"  # the proxy's own unit format: u_ + 24 hex digits


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class HarnessError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------
# Servers run by the harness in child processes (`python -m loadtests.bench _upstream ...`)
# --------------------------------------------------------------------------------------------

def serve_upstream(port: int) -> None:
    """The Python upstream: a raw ASGI app on uvicorn + httptools + uvloop."""
    import uvicorn

    start = {"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode()),
        (b"x-backend-name", b"core"),
    ]}
    body = {"type": "http.response.body", "body": BODY}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["method"] not in ("GET", "HEAD"):
            more = True
            while more:
                message = await receive()
                more = message.get("more_body", False)
        await send(start)
        await send(body)

    uvicorn.run(app, host="127.0.0.1", port=port, http="httptools", loop="uvloop",
                log_level="warning", access_log=False, lifespan="on", backlog=4096)


def serve_baseline(port: int, upstream: str) -> None:
    """The yardstick: aiohttp server + one pooled aiohttp client session, on uvloop."""
    import aiohttp
    import uvloop
    from aiohttp import web
    from multidict import CIMultiDict

    request_drop = HOP_BY_HOP | {"host"}
    response_drop = HOP_BY_HOP | {"content-length"}
    key: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)

    async def on_startup(app: web.Application) -> None:
        app[key] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, limit_per_host=256, keepalive_timeout=30),
            cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        )

    async def on_cleanup(app: web.Application) -> None:
        await app[key].close()

    async def handle(request: web.Request) -> web.Response:
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in request_drop)
        data = await request.read() if request.body_exists else None
        async with request.app[key].request(
            request.method, upstream + request.path_qs, headers=headers, data=data,
            allow_redirects=False,
        ) as response:
            payload = await response.read()
            out = CIMultiDict(
                (k, v) for k, v in response.headers.items() if k.lower() not in response_drop)
            return web.Response(status=response.status, body=payload, headers=out)

    app = web.Application()
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=4096,
                loop=uvloop.new_event_loop())


# --------------------------------------------------------------------------------------------
# Process management
# --------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Processes:
    """Every child runs in its own session; stopping kills its whole process group."""

    def __init__(self, workdir: Path, pin: tuple[set[int], set[int]] | None = None) -> None:
        self.workdir = workdir
        self.children: list[Child] = []
        self.pin = pin  # (CPUs of the proxies under test, CPUs of everything else)

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None,
              cwd: Path | None = None, proxy: bool = False) -> Child:
        log_path = self.workdir / f"{name}.log"
        cpus = None if self.pin is None else self.pin[0 if proxy else 1]
        own = os.sched_getaffinity(0) if cpus else None
        if cpus:  # a child inherits its parent's CPU affinity (and passes it to its workers)
            os.sched_setaffinity(0, cpus)
        try:
            with open(log_path, "wb") as out:
                proc = subprocess.Popen(
                    cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env={**os.environ, **(env or {})}, cwd=str(cwd or REPO),
                    start_new_session=True,
                )
        finally:
            if own:
                os.sched_setaffinity(0, own)
        child = Child(name, proc, log_path)
        self.children.append(child)
        return child

    @staticmethod
    def _signal(child: Child, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.proc.pid, sig)  # the child's own group (start_new_session)

    def stop(self, child: Child, grace: float = 10.0) -> None:
        if child.proc.poll() is None:
            self._signal(child, signal.SIGTERM)
            try:
                child.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal(child, signal.SIGKILL)
                child.proc.wait(5)
        else:  # the leader is gone; make sure nothing it started lingers
            self._signal(child, signal.SIGKILL)
        with contextlib.suppress(ValueError):
            self.children.remove(child)

    def stop_all(self) -> None:
        for child in list(self.children):
            if child.proc.poll() is None:
                self._signal(child, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for child in list(self.children):
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            self._signal(child, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(5)
        self.children.clear()


def http_get(port: int, path: str, headers: dict[str, str] | None = None,
             timeout: float = 2.0) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def wait_ready(child: Child, port: int, path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if child.proc.poll() is not None:
            raise HarnessError(f"{child.name} exited with code {child.proc.returncode}:\n"
                               f"{child.log_tail()}")
        try:
            status, _, _ = http_get(port, path, timeout=1.0)
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise HarnessError(f"{child.name} not ready on port {port} after {timeout:.0f} s:\n"
                               f"{child.log_tail()}")
        time.sleep(0.05)


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def nginx_conf(workdir: Path, name: str, server_block: str, extra_http: str = "") -> Path:
    temp = workdir / f"{name}-temp"
    temp.mkdir(exist_ok=True)
    conf = workdir / f"{name}.conf"
    conf.write_text(f"""
worker_processes 1;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    server_tokens off;
    {extra_http}
    server {{
        {server_block}
    }}
}}
""")
    return conf


def start_nginx(procs: Processes, name: str, conf: Path, proxy: bool = False) -> Child:
    binary = nginx_binary()
    assert binary is not None
    return procs.start(name, [binary, "-e", str(procs.workdir / f"{name}-error.log"),
                              "-p", str(procs.workdir), "-c", str(conf), "-g", "daemon off;"],
                       proxy=proxy)


# --------------------------------------------------------------------------------------------
# CPU accounting (Linux /proc): CPU seconds of a process and its descendants
# --------------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> tuple[int, float] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK  # ppid, utime+stime


def cpu_seconds(root: int) -> float | None:
    if not Path("/proc/self/stat").exists():
        return None
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                parents[int(entry.name)], cpu[int(entry.name)] = stat
    if root not in cpu:
        return None
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return sum(cpu.get(pid, 0.0) for pid in tree)


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
init = function(args)
  for k = 1, n do
    local headers = {}
    headers["X-Checkout-Funnel"] = "%(funnel)s"
    headers["X-Country"] = "%(country)s"
    headers["X-Checkout-Session"] = string.format("u_%%024x", k - 1)
    reqs[k] = wrk.format("GET", "%(path)s", headers)
  end
end
request = function()
  i = i %% n + 1
  return reqs[i]
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


class WrkLoad:
    name = "wrk"

    def __init__(self, binary: str, procs: Processes) -> None:
        self.binary = binary
        self.procs = procs
        self.script = procs.workdir / "bench.lua"
        self.script.write_text(WRK_SCRIPT % {
            "sessions": SESSIONS, "funnel": FUNNEL_HEADERS["X-Checkout-Funnel"],
            "country": FUNNEL_HEADERS["X-Country"], "path": REQUEST_PATH,
        })

    def run(self, port: int, concurrency: int, duration: float) -> LoadResult:
        seconds = max(1, math.ceil(duration))  # wrk takes whole seconds
        cmd = [self.binary, "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "5s",
               "-s", str(self.script), f"http://127.0.0.1:{port}{REQUEST_PATH}"]
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

        url = f"http://127.0.0.1:{port}{REQUEST_PATH}"
        headers = [{**FUNNEL_HEADERS, "X-Checkout-Session": session_id(i)}
                   for i in range(SESSIONS)]
        counter = itertools.count()
        latencies: list[float] = []
        errors = non_2xx = 0
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency,
                                         keepalive_timeout=60)
        async with aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=10),
        ) as session:
            async def worker(end: float) -> None:
                nonlocal errors, non_2xx
                clock = time.perf_counter
                while True:
                    t0 = clock()
                    if t0 >= end:
                        return
                    try:
                        async with session.get(url, headers=headers[next(counter) % SESSIONS]
                                               ) as response:
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
            seconds = time.perf_counter() - started
        return summarize(latencies, seconds, errors, non_2xx)


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
# Targets
# --------------------------------------------------------------------------------------------

@dataclass
class Target:
    name: str
    kind: str  # direct, baseline, full, nginx
    port: int
    child: Child | None  # the process whose CPU is charged to this target
    description: str
    sample: dict[str, str] = field(default_factory=dict)


def start_upstream(procs: Processes, kind: str) -> tuple[Target, str]:
    port = free_port()
    if kind == "nginx":
        block = f"""
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            default_type application/json;
            add_header X-Backend-Name core;
            return 200 '{BODY.decode()}';
        }}"""
        child = start_nginx(procs, "upstream", nginx_conf(procs.workdir, "upstream", block))
        description = "nginx, 1 worker, `return 200` with a fixed JSON body"
    else:
        child = procs.start("upstream", [sys.executable, "-m", "loadtests.bench", "_upstream",
                                         "--port", str(port)])
        description = "raw ASGI app on uvicorn + httptools + uvloop, 1 process"
    wait_ready(child, port, "/healthz")
    return Target("direct", "direct", port, child, f"the upstream itself: {description}"), \
        f"http://127.0.0.1:{port}"


def start_baseline(procs: Processes, upstream: str) -> Target:
    port = free_port()
    child = procs.start("baseline", [sys.executable, "-m", "loadtests.bench", "_baseline",
                                     "--port", str(port), "--upstream", upstream], proxy=True)
    wait_ready(child, port, REQUEST_PATH)
    return Target("baseline", "baseline", port, child,
                  "aiohttp.web + one pooled aiohttp ClientSession, uvloop, 1 process")


def start_full(procs: Processes, upstream: str, name: str = "full",
               tree: Path = REPO, workers: int = 1, redis_url: str | None = None) -> Target:
    """`strangler serve` with the code of `tree` (a copy of the repository: run from there,
    its proxy/ and cli/ come first on sys.path) and its rules/checkout.yaml; with
    `redis_url`, state in Redis and `workers` processes."""
    port = free_port()
    data = procs.workdir / f"{name}-data"
    data.mkdir(exist_ok=True)
    rules = tree / "rules" / "checkout.yaml"
    if not rules.exists():
        rules = RULES_FILE
    cmd = [sys.executable, "-m", "cli.main", "serve", "--core-url", upstream,
           "--legacy-url", upstream, "--rules", str(rules), "--host", "127.0.0.1",
           "--port", str(port), "--db-path", str(data / "strangler.sqlite3")]
    if redis_url is not None:
        cmd += ["--redis-url", redis_url, "--workers", str(workers)]
    child = procs.start(name, cmd, env={"STRANGLER_LOG_LEVEL": "warning"}, cwd=tree,
                        proxy=True)
    wait_ready(child, port, "/_strangler/healthz")
    # The rules must be loaded and the request must go through a funnel rule.
    status, headers, _ = http_get(port, REQUEST_PATH, {
        **FUNNEL_HEADERS, "X-Checkout-Session": session_id(SESSIONS + 1)})
    decision = headers.get("x-checkout-decision", "")
    if status != 200 or ("rule=" not in decision and name == "full"):
        raise HarnessError(f"{name}: expected a RULE decision through the funnel, got "
                           f"{status} {decision!r}:\n{child.log_tail()}")
    where = "" if tree == REPO else f"code from {tree}: "
    return Target(name, "full", port, child,
                  f"{where}`strangler serve` (uvicorn, httptools, uvloop, 1 worker), "
                  f"{rules.relative_to(tree) if rules.is_relative_to(tree) else rules}, "
                  "SQLite control store",
                  {"x-checkout-backend": headers.get("x-checkout-backend", ""),
                   "x-checkout-decision": decision})


def start_redis(procs: Processes) -> str:
    """A redis-server of the bench's own (nothing saved), for the multi-worker targets."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise HarnessError("--workers needs redis-server (workers share state through Redis)")
    port = free_port()
    child = procs.start("redis", [binary, "--port", str(port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no",
                                  "--dir", str(procs.workdir)])
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(64).startswith(b"+PONG"):
                return f"redis://127.0.0.1:{port}/0"
        if child.proc.poll() is not None or time.monotonic() > deadline:
            raise HarnessError(f"redis-server did not start:\n{child.log_tail()}")
        time.sleep(0.05)


def start_nginx_proxy(procs: Processes, upstream: str) -> Target:
    port = free_port()
    upstream_hostport = upstream.removeprefix("http://")
    block = f"""
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}"""
    extra = f"upstream bench_upstream {{ server {upstream_hostport}; keepalive 256; }}"
    child = start_nginx(procs, "nginx-proxy",
                        nginx_conf(procs.workdir, "nginx-proxy", block, extra), proxy=True)
    wait_ready(child, port, REQUEST_PATH)
    return Target("nginx", "nginx", port, child,
                  "nginx reverse proxy, 1 worker, upstream keepalive 256")


# --------------------------------------------------------------------------------------------
# Running the points and judging them
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


def system_busy() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, wall clock) for a busy-cores figure."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(f) for f in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / _TICK, time.monotonic()


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


@dataclass
class Check:
    name: str
    target: str
    value: float | None
    limit: float | None
    status: str  # PASS, FAIL, N/A
    detail: str


def analyse(points: list[Point]) -> tuple[dict[str, Any], list[Check]]:
    by = {(p.target, p.concurrency): p for p in points}
    targets = list(dict.fromkeys(p.target for p in points))
    levels = sorted({p.concurrency for p in points})

    def rps(t: str, c: int) -> float | None:
        p = by.get((t, c))
        return p.rps if p is not None and p.rps > 0 else None

    def cpu(t: str, c: int) -> float | None:  # the least disturbed round
        p = by.get((t, c))
        if p is None:
            return None
        return p.cpu_us_per_request_min or p.cpu_us_per_request

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b not in (None, 0) else None

    ratios: dict[str, Any] = {}
    for t in targets:
        p_mid = by.get((t, C_MID))
        c1, d1 = by.get((t, 1)), by.get(("direct", 1))
        ratios[t] = {
            "throughput_vs_baseline": {
                str(c): ratio(rps(t, c), rps("baseline", c)) for c in levels},
            # CPU-normalised: baseline CPU per request / this target's (cheapest rounds). Less
            # sensitive than req/s to other load on a shared machine.
            "cpu_efficiency_vs_baseline": {
                str(c): ratio(cpu(t, c) and cpu("baseline", c), cpu(t, c)) for c in levels},
            "c128_over_c32": ratio(rps(t, C_HIGH), rps(t, C_MID)),
            "p99_over_p50_at_c32": ratio(p_mid.p99_ms, p_mid.p50_ms) if p_mid else None,
            "c1_p50_overhead_ms": (c1.p50_ms - d1.p50_ms) if c1 and d1 else None,
        }

    checks: list[Check] = []
    base = ratios.get("baseline")
    full_targets = [t for t in targets if t == "full" or t.startswith("full")]

    def check(name: str, target: str, value: float | None, limit: float | None, ok: bool,
              detail: str) -> None:
        status = "N/A" if value is None or limit is None else ("PASS" if ok else "FAIL")
        checks.append(Check(name, target, value, limit, status, detail))

    for t in full_targets:
        r = ratios[t]
        for c in (C_MID, C_HIGH):
            v = r["throughput_vs_baseline"].get(str(c))
            check(f"throughput >= {MIN_THROUGHPUT_RATIO:.1f}x baseline at c={c}", t, v,
                  MIN_THROUGHPUT_RATIO if base else None,
                  v is not None and v >= MIN_THROUGHPUT_RATIO, "req/s ratio")
        v, lim = r["c128_over_c32"], base["c128_over_c32"] if base else None
        check("c128/c32 throughput ratio >= baseline's", t, v, lim,
              v is not None and lim is not None and v >= lim, "scaling with concurrency")
        v, lim = r["p99_over_p50_at_c32"], base["p99_over_p50_at_c32"] if base else None
        check("p99/p50 at c=32 <= baseline's", t, v, lim,
              v is not None and lim is not None and v <= lim, "tail latency")
        v = r["c1_p50_overhead_ms"]
        check(f"c=1 p50 overhead over direct <= {MAX_C1_OVERHEAD_MS} ms", t, v,
              MAX_C1_OVERHEAD_MS, v is not None and v <= MAX_C1_OVERHEAD_MS, "ms")
    return ratios, checks


def _fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None or (isinstance(value, float) and math.isnan(value)) \
        else format(value, spec)


def render(report: dict[str, Any]) -> str:
    points = [Point(**p) for p in report["points"]]
    ratios = report["ratios"]
    base = {p.concurrency: p.rps for p in points if p.target == "baseline"}
    lines = []
    cfg = report["config"]
    lines.append(f"checkout strangler proxy benchmark: loadgen={cfg['loadgen']}, "
                 f"upstream={cfg['upstream']}, {cfg['duration']} s per point "
                 f"(+{cfg['warmup']} s warm-up), {cfg['rounds']} round(s), "
                 f"{report['machine']['cpus']} CPUs shared"
                 + (f", proxy under test pinned to CPU {cfg['pinning']['proxy_cpus']}, "
                    f"load generator and upstream to CPU {cfg['pinning']['other_cpus']}"
                    if cfg.get("pinning") else ", no pinning"))
    lines.append("")
    header = (f"{'target':<14}{'c':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'p99/p50':>9}"
              f"{'errors':>8}{'CPU us/req':>12}{'x baseline':>12}{'busy':>7}")
    lines.append(header)
    lines.append("-" * len(header))
    for p in points:
        errors = p.errors + p.non_2xx
        lines.append(
            f"{p.target:<14}{p.concurrency:>5}{p.rps:>10.0f}{_fmt(p.p50_ms, '.3f'):>9}"
            f"{_fmt(p.p99_ms, '.3f'):>9}"
            f"{_fmt(p.p99_ms / p.p50_ms if p.p50_ms else None, '.2f'):>9}{errors:>8}"
            f"{_fmt(p.cpu_us_per_request, '.0f'):>12}"
            f"{_fmt(p.rps / base[p.concurrency] if base.get(p.concurrency) else None, '.2f'):>12}"
            f"{_fmt(p.busy_cores, '.2f'):>7}"
        )
    lines.append("(CPU us/req: the target's own processes; busy: CPUs busy machine-wide during "
                 "the point, load generator and upstream included; medians over rounds)")
    lines.append("")
    lines.append(f"{'ratios':<14}{'c128/c32':>10}{'p99/p50@32':>12}{'c1 p50 - direct ms':>20}"
                 f"{'CPU efficiency vs baseline (c=32, c=128)':>44}")
    for t, r in ratios.items():
        eff = r["cpu_efficiency_vs_baseline"]
        lines.append(f"{t:<14}{_fmt(r['c128_over_c32'], '.2f'):>10}"
                     f"{_fmt(r['p99_over_p50_at_c32'], '.2f'):>12}"
                     f"{_fmt(r['c1_p50_overhead_ms'], '+.3f'):>20}"
                     f"{_fmt(eff.get(str(C_MID)), '.2f'):>36}{_fmt(eff.get(str(C_HIGH)), '.2f'):>8}")
    lines.append("")
    lines.append("targets (full proxy vs the aiohttp baseline):")
    for c in report["checks"]:
        value = _fmt(c["value"], ".3f", "not measured")
        limit = _fmt(c["limit"], ".3f", "-")
        lines.append(f"  [{c['status']:<4}] {c['target']}: {c['name']}: {value} (limit {limit})")
    for profile in report.get("profiles") or ():
        lines.append("")
        lines.append(profile["text"])
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Profiling (optional): py-spy on a full proxy during an extra c=32 run
# --------------------------------------------------------------------------------------------

def summarize_collapsed(path: Path, top: int = 25) -> str:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    self_samples: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(f) for f in stack.split(";")]
        self_samples[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "profile: no samples"
    out = [(f"profile: {total} samples; top self time (function (file)); time inside a C "
            "call (socket writes included) counts as its Python caller's self time:")]
    for name, n in self_samples.most_common(top):
        out.append(f"  {100 * n / total:5.1f}% self {100 * inclusive[name] / total:5.1f}% incl  "
                   f"{name}")
    return "\n".join(out)


def _frame_name(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (to/file.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = where.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else where
    return f"{name} ({short})"


def profile_target(load: WrkLoad | PythonLoad, target: Target, duration: float,
                   outdir: Path, procs: Processes) -> dict[str, Any] | None:
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None or target.child is None:
        log("profile: py-spy not found (pip install py-spy), skipped")
        return None
    outdir.mkdir(parents=True, exist_ok=True)
    raw = outdir / f"{target.name}-c{C_MID}.txt"
    seconds = max(2, math.ceil(duration))
    child = procs.start("py-spy", [spy, "record", "--pid", str(target.child.proc.pid),
                                   "--duration", str(seconds), "--rate", "250", "--format", "raw",
                                   "--nonblocking", "--output", str(raw)])
    time.sleep(0.5)
    load.run(target.port, C_MID, seconds + 0.5)
    try:
        child.proc.wait(seconds + 30)
    except subprocess.TimeoutExpired:
        log("profile: py-spy did not finish")
    procs.stop(child)
    if not raw.exists():
        log(f"profile: py-spy wrote nothing:\n{child.log_tail()}")
        return None
    text = summarize_collapsed(raw)
    return {"target": target.name, "file": str(raw), "text": f"{target.name} at c={C_MID}: "
            + text}


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform()}


def cpu_split() -> tuple[set[int], set[int]] | None:
    """The last usable CPU for the proxy under test, the others for everything else."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return {cpus[-1]}, set(cpus[:-1])


def _loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench",
        description="Benchmark the full proxy against a minimal aiohttp proxy, nginx and "
        "direct (see the module docstring).")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of unrecorded load before each point")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every point this many times, interleaving targets; "
                        "report medians (useful on a busy machine)")
    parser.add_argument("-c", "--concurrency", default="1,8,32,128",
                        help="comma-separated concurrencies (default 1,8,32,128)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--upstream", choices=("auto", "nginx", "python"), default="auto")
    parser.add_argument("--nginx", choices=("auto", "on", "off"), default="auto",
                        help="nginx reverse-proxy target (auto: when installed)")
    parser.add_argument("--targets", default="direct,baseline,full,nginx",
                        help="comma-separated subset of direct,baseline,full,nginx")
    parser.add_argument("--tree", type=Path, default=REPO, metavar="DIR",
                        help="run the full proxy from this copy of the repository "
                        "(default: this one), e.g. a `git archive` of a commit")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DIR",
                        help="an extra full-proxy target run from the repository copy DIR "
                        "(e.g. with a modified proxy/); shown as full-NAME")
    parser.add_argument("--workers", default="", metavar="N,M",
                        help="extra full-proxy targets with state in Redis (a redis-server "
                        "of the bench's own) and N worker processes each, shown as "
                        "full-redis-wN; use with --pin off, or the workers share one CPU")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy each Python proxy (baseline, full, variants) during an "
                        "extra c=32 run; raw stacks in DIR")
    parser.add_argument("--pin", choices=("auto", "off"), default="auto",
                        help="auto: with 2+ CPUs, run the proxy under test alone on the last "
                        "CPU and the load generator and upstream on the others")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--json-out", type=Path, metavar="FILE", help="also write JSON here")
    parser.add_argument("--fail-on-miss", action="store_true",
                        help="exit 1 when a target is missed (default: report only)")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the work directory with the servers' logs")
    args = parser.parse_args(argv)
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not args.levels or min(args.levels) < 1:
        parser.error("--concurrency needs positive integers")
    try:
        args.workers = [int(n) for n in args.workers.split(",") if n.strip()]
    except ValueError:
        parser.error("--workers needs comma-separated integers")
    if any(n < 1 for n in args.workers):
        parser.error("--workers needs positive integers")
    args.target_names = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.target_names) - set(TARGET_ORDER)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    return args


def _raise_exit(signum: int, _frame: Any) -> None:
    log(f"bench: signal {signum}, stopping every process")
    raise SystemExit(128 + signum)


def run(args: argparse.Namespace) -> int:
    wrk = shutil.which("wrk")
    nginx = nginx_binary()
    if args.loadgen == "wrk" and not wrk:
        raise HarnessError("--loadgen wrk: wrk is not installed")
    if not nginx and (args.upstream == "nginx" or args.nginx == "on"):
        raise HarnessError("nginx requested but not installed")
    loadgen = "wrk" if args.loadgen == "wrk" or (args.loadgen == "auto" and wrk) else "python"
    upstream_kind = "nginx" if args.upstream == "nginx" or (
        args.upstream == "auto" and nginx) else "python"
    wanted = list(args.target_names)
    if "nginx" in wanted and (args.nginx == "off" or (args.nginx == "auto" and not nginx)):
        wanted.remove("nginx")

    loadavg_start = _loadavg()
    pin = cpu_split() if args.pin == "auto" else None
    if pin is not None:
        os.sched_setaffinity(0, pin[1])  # the harness and the Python load generator
    workdir = Path(tempfile.mkdtemp(prefix="strangler-bench-"))
    procs = Processes(workdir, pin)
    try:
        log(f"bench: work directory {workdir}; loadgen={loadgen}, upstream={upstream_kind}, "
            + (f"proxies on CPU {sorted(pin[0])}, the rest on CPU {sorted(pin[1])}"
               if pin else "no CPU pinning"))
        direct, upstream = start_upstream(procs, upstream_kind)
        targets: list[Target] = []
        for name in TARGET_ORDER:
            if name not in wanted:
                continue
            if name == "direct":
                targets.append(direct)
            elif name == "baseline":
                targets.append(start_baseline(procs, upstream))
            elif name == "full":
                targets.append(start_full(procs, upstream, tree=args.tree.resolve()))
            elif name == "nginx":
                targets.append(start_nginx_proxy(procs, upstream))
        if args.workers:
            redis = start_redis(procs)
            for n in args.workers:
                targets.append(start_full(procs, upstream, f"full-redis-w{n}",
                                          args.tree.resolve(), workers=n, redis_url=redis))
        for spec in args.variant:
            vname, _, vdir = spec.partition("=")
            if not vname or not vdir:
                raise HarnessError(f"--variant {spec!r}: expected NAME=DIR")
            targets.append(start_full(procs, upstream, f"full-{vname}", Path(vdir).resolve()))
        load: WrkLoad | PythonLoad = WrkLoad(wrk, procs) if loadgen == "wrk" and wrk \
            else PythonLoad()

        # Concurrency-major and interleaved: on a shared machine a burst of outside load
        # then hits every target alike; each round starts with the next target.
        measured: dict[tuple[str, int], list[Point]] = {}
        for c in args.levels:
            for r in range(args.rounds):
                shift = r % len(targets)
                for target in targets[shift:] + targets[:shift]:
                    log(f"bench: {target.name} c={c} round {r + 1}/{args.rounds} ...")
                    point = measure(load, target, c, args.duration, args.warmup)
                    log(f"bench: {target.name} c={c}: {point.rps:.0f} req/s, p50 "
                        f"{point.p50_ms:.3f} ms, p99 {point.p99_ms:.3f} ms, errors "
                        f"{point.errors + point.non_2xx}, CPU "
                        f"{_fmt(point.cpu_us_per_request, '.0f')} us/req, machine busy "
                        f"{_fmt(point.busy_cores, '.2f')} cores")
                    measured.setdefault((target.name, c), []).append(point)
                    time.sleep(0.2)
        points = [combine(measured[(t.name, c)]) for t in targets for c in args.levels]

        profiles: list[dict[str, Any]] = []
        if args.profile is not None:
            for target in targets:
                if target.kind not in ("full", "baseline"):
                    continue
                log(f"bench: profiling {target.name} at c={C_MID} with py-spy ...")
                try:
                    found = profile_target(load, target, max(args.duration, 5.0),
                                           args.profile, procs)
                except (OSError, HarnessError) as exc:
                    log(f"profile: skipped: {exc}")
                    continue
                if found is not None:
                    profiles.append(found)

        ratios, checks = analyse(points)
        report = {
            "config": {"duration": args.duration, "warmup": args.warmup, "rounds": args.rounds,
                       "pinning": {"proxy_cpus": sorted(pin[0]), "other_cpus": sorted(pin[1])}
                       if pin else None,
                       "concurrency": args.levels, "loadgen": loadgen,
                       "upstream": upstream_kind, "path": REQUEST_PATH,
                       "headers": {**FUNNEL_HEADERS,
                                   "X-Checkout-Session": f"{SESSIONS} rotating units"},
                       "body_bytes": len(BODY)},
            "machine": {**machine_info(), "loadavg_at_start": loadavg_start,
                        "loadavg_at_end": _loadavg()},
            "targets": {t.name: {"description": t.description, "sample": t.sample}
                        for t in targets},
            "points": [asdict(p) for p in points],
            "ratios": ratios,
            "checks": [asdict(c) for c in checks],
            "profiles": profiles,
        }
        if args.json_out:
            args.json_out.write_text(json.dumps(report, indent=2) + "\n")
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(render(report))
        missed = any(c.status == "FAIL" for c in checks)
        return 1 if missed and args.fail_on_miss else 0
    finally:
        procs.stop_all()
        if args.keep_logs:
            log(f"bench: logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("_upstream", "_baseline"):
        role = argparse.ArgumentParser(prog=f"bench {argv[0]}")
        role.add_argument("--port", type=int, required=True)
        role.add_argument("--upstream")
        opts = role.parse_args(argv[1:])
        if argv[0] == "_upstream":
            serve_upstream(opts.port)
        else:
            serve_baseline(opts.port, opts.upstream)
        return 0
    args = parse_args(argv)
    # Ctrl-C raises KeyboardInterrupt even when started from a shell that ignores SIGINT in
    # background jobs; SIGTERM and SIGHUP unwind the same way. Either way `run` stops all.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_exit)
    with contextlib.suppress(AttributeError):
        signal.signal(signal.SIGHUP, _raise_exit)
    try:
        return run(args)
    except HarnessError as exc:
        log(f"bench: error: {exc}")
        return 2
    except KeyboardInterrupt:
        log("bench: interrupted, every process stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
