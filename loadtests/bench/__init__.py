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

The harness, module by module:

- ``common``: the request, the upstream's answer, the thresholds, ``log``, ``HarnessError``;
- ``procs``: child processes (``Processes``), readiness probes, nginx, CPU accounting;
- ``servers``: the upstream and baseline servers (child roles ``_upstream``, ``_baseline``)
  and the ``start_*`` functions of the targets;
- ``load``: the wrk and Python load generators, ``measure`` and ``combine``;
- ``report``: ``analyse`` (ratios, PASS/FAIL checks), the JSON report, ``render``;
- ``profiling``: ``--profile`` (py-spy);
- ``cli``: the flags, ``run`` and ``main`` (``__main__`` runs ``main``).
"""

from loadtests.bench.cli import main, parse_args, run
from loadtests.bench.common import (
    FUNNEL_HEADERS,
    REPO,
    REQUEST_PATH,
    HarnessError,
    log,
)
from loadtests.bench.procs import Processes, cpu_split, nginx_binary
from loadtests.bench.servers import Target, start_full, start_upstream

__all__ = [
    "FUNNEL_HEADERS",
    "REPO",
    "REQUEST_PATH",
    "HarnessError",
    "Processes",
    "Target",
    "cpu_split",
    "log",
    "main",
    "nginx_binary",
    "parse_args",
    "run",
    "start_full",
    "start_upstream",
]
