"""The servers of a run: the upstream and the baseline proxy, which the harness runs in child
processes (`python -m loadtests.bench _upstream ...`, `... _baseline ...`), and the
`start_*` functions that start each target and wait until it answers."""

from __future__ import annotations

import contextlib
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadtests.bench.common import (
    BODY,
    FUNNEL_HEADERS,
    HOP_BY_HOP,
    OTEL_TARGET,
    REPO,
    REQUEST_PATH,
    RULES_FILE,
    SESSIONS,
    HarnessError,
    session_id,
)
from loadtests.bench.procs import (
    Child,
    Processes,
    free_port,
    http_get,
    nginx_conf,
    start_nginx,
    wait_ready,
)

if TYPE_CHECKING:
    from aiohttp import web

# --------------------------------------------------------------------------------------------
# Servers run by the harness in child processes (`python -m loadtests.bench _upstream ...`)
# --------------------------------------------------------------------------------------------


async def _lifespan(receive: Any, send: Any) -> None:
    """Complete the ASGI lifespan's start-up and shut-down (the harness's servers hold
    nothing to set up)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


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
            await _lifespan(receive, send)
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


def serve_discard(port: int) -> None:
    """An OTLP/HTTP receiver that keeps nothing: answers `POST /v1/traces` with 200 and
    counts requests, bytes and (with opentelemetry-proto installed) spans; `GET /stats`
    tells them as JSON. The exporter of the traced proxy sends here (--otel)."""
    import json

    import uvicorn

    try:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )
    except ImportError:
        ExportTraceServiceRequest = None

    stats = {"posts": 0, "bytes": 0, "spans": 0 if ExportTraceServiceRequest else None}
    ok = [{"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/x-protobuf"), (b"content-length", b"0")]},
        {"type": "http.response.body", "body": b""}]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "GET":
            payload = json.dumps(stats).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode())]})
            await send({"type": "http.response.body", "body": payload})
            return
        stats["posts"] = int(stats["posts"] or 0) + 1
        stats["bytes"] = int(stats["bytes"] or 0) + len(body)
        if ExportTraceServiceRequest is not None:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            stats["spans"] = int(stats["spans"] or 0) + sum(
                len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        for message in ok:
            await send(message)

    uvicorn.run(app, host="127.0.0.1", port=port, http="httptools", loop="uvloop",
                log_level="warning", access_log=False, lifespan="on")


def serve_baseline(port: int, upstream: str) -> None:
    """The yardstick: aiohttp server + one pooled aiohttp client session, on uvloop."""
    import uvloop
    from aiohttp import web

    web.run_app(baseline_app(upstream), host="127.0.0.1", port=port, access_log=None,
                print=None, backlog=4096, loop=uvloop.new_event_loop())


def baseline_app(upstream: str) -> web.Application:
    """The baseline's aiohttp application: forwards every request to `upstream`."""
    import aiohttp
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
    return app


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
               tree: Path = REPO, workers: int = 1, redis_url: str | None = None,
               env: dict[str, str] | None = None, rules: Path | None = None) -> Target:
    """`strangler serve` with the code of `tree` (a copy of the repository: run from there,
    its proxy/ and cli/ come first on sys.path) and its rules/checkout.yaml, or the rules
    file `rules`; with `redis_url`, state in Redis and `workers` processes; `env`: more
    variables (tracing is off unless they turn it on)."""
    port = free_port()
    data = procs.workdir / f"{name}-data"
    data.mkdir(exist_ok=True)
    if rules is None:
        rules = tree / "rules" / "checkout.yaml"
        if not rules.exists():
            rules = RULES_FILE
    cmd = [sys.executable, "-m", "cli.main", "serve", "--core-url", upstream,
           "--legacy-url", upstream, "--rules", str(rules), "--host", "127.0.0.1",
           "--port", str(port), "--db-path", str(data / "strangler.sqlite3")]
    if redis_url is not None:
        cmd += ["--redis-url", redis_url, "--workers", str(workers)]
    # the load generator plays a CDN's customers: X-Country from loopback is believed
    child = procs.start(name, cmd, env={"STRANGLER_LOG_LEVEL": "warning",
                                        "STRANGLER_TRUST_COUNTRY_HEADERS": "always",
                                        "STRANGLER_OTEL": "off", **(env or {})},
                        cwd=tree, proxy=True)
    wait_ready(child, port, "/_strangler/healthz")
    sample = _probe_funnel(child, name, port)
    where = "" if tree == REPO else f"code from {tree}: "
    if env and env.get("STRANGLER_OTEL") == "on":
        share = float(env.get("OTEL_TRACES_SAMPLER_ARG", "1"))
        where += (f"tracing on (STRANGLER_OTEL, {share:.0%} sampled, OTLP HTTP to a discard "
                  "receiver): ")
    return Target(name, "full", port, child,
                  f"{where}`strangler serve` (uvicorn, httptools, uvloop, 1 worker), "
                  f"{rules.relative_to(tree) if rules.is_relative_to(tree) else rules}, "
                  "SQLite control store", sample)


def start_discard(procs: Processes) -> tuple[str, int]:
    """The OTLP discard receiver (`serve_discard`), beside the load generator: its URL and
    port."""
    port = free_port()
    child = procs.start("otlp-discard", [sys.executable, "-m", "loadtests.bench", "_discard",
                                         "--port", str(port)])
    wait_ready(child, port, "/stats")
    return f"http://127.0.0.1:{port}", port


def start_full_otel(procs: Processes, upstream: str, discard_url: str,
                    tree: Path = REPO, sample: float = 1.0) -> Target:
    """The full proxy with tracing on, `sample` of the requests sampled (1: all), exporting
    to `discard_url` with the SDK's default batching (OTEL_BSP_*)."""
    sampler = {"OTEL_TRACES_SAMPLER": "always_on"} if sample >= 1 else {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": str(sample)}
    return start_full(procs, upstream, OTEL_TARGET, tree, env={
        "STRANGLER_OTEL": "on", **sampler,
        "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": discard_url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_SERVICE_NAME": "bench-proxy",
        "OTEL_SDK_DISABLED": "false"})


def _probe_funnel(child: Child, name: str, port: int) -> dict[str, str]:
    """The rules must be loaded and the request must go through a funnel rule: one request,
    its backend and decision headers."""
    status, headers, _ = http_get(port, REQUEST_PATH, {
        **FUNNEL_HEADERS, "X-Checkout-Session": session_id(SESSIONS + 1)})
    decision = headers.get("x-checkout-decision", "")
    if status != 200 or ("rule=" not in decision and name == "full"):
        raise HarnessError(f"{name}: expected a RULE decision through the funnel, got "
                           f"{status} {decision!r}:\n{child.log_tail()}")
    return {"x-checkout-backend": headers.get("x-checkout-backend", ""),
            "x-checkout-decision": decision}


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
