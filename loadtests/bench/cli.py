"""The command line of `python -m loadtests.bench`: its flags, one run from start to end
(choose the tools, start the targets, measure, profile, report; stop every process whatever
happens) and the hidden child roles `_upstream`, `_baseline` and `_discard`."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.bench.common import (
    BODY,
    FUNNEL_HEADERS,
    OTEL_TARGET,
    REPO,
    REQUEST_PATH,
    SESSIONS,
    TARGET_ORDER,
    HarnessError,
    log,
)
from loadtests.bench.load import Point, PythonLoad, WrkLoad, combine, measure
from loadtests.bench.procs import (
    Processes,
    clean_up,
    cpu_split,
    http_get,
    loadavg,
    nginx_binary,
    unwind_on_signals,
)
from loadtests.bench.profiling import profile_all
from loadtests.bench.report import _fmt, build_report, render
from loadtests.bench.servers import (
    Target,
    serve_baseline,
    serve_discard,
    serve_upstream,
    start_baseline,
    start_discard,
    start_full,
    start_full_otel,
    start_nginx_proxy,
    start_redis,
    start_upstream,
)

# --------------------------------------------------------------------------------------------
# Flags
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--otel", action="store_true",
                        help="also run the full proxy with OpenTelemetry tracing on "
                        "(STRANGLER_OTEL, the [otel] extra) at 100%% sampling, exporting to "
                        "a local OTLP discard receiver, as full-otel; the report compares it "
                        "with full (tracing off) in the same run")
    parser.add_argument("--otel-sample", type=float, default=1.0, metavar="RATIO",
                        help="with --otel: the share of requests traced (default 1: all; "
                        "below 1, OTEL_TRACES_SAMPLER=parentbased_traceidratio)")
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
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _parser()
    args = parser.parse_args(argv)
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not 0 < args.otel_sample <= 1:
        parser.error("--otel-sample must be in (0, 1]")
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


# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------

@dataclass
class Plan:
    """What a run uses, given the flags and what is installed."""

    wrk: str | None
    loadgen: str  # wrk, python
    upstream_kind: str  # nginx, python
    wanted: list[str]  # of TARGET_ORDER


def _plan(args: argparse.Namespace) -> Plan:
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
    return Plan(wrk, loadgen, upstream_kind, wanted)


def _start_targets(procs: Processes, args: argparse.Namespace, plan: Plan) -> list[Target]:
    direct, upstream = start_upstream(procs, plan.upstream_kind)
    targets: list[Target] = []
    for name in TARGET_ORDER:
        if name not in plan.wanted:
            continue
        if name == "direct":
            targets.append(direct)
        elif name == "baseline":
            targets.append(start_baseline(procs, upstream))
        elif name == "full":
            targets.append(start_full(procs, upstream, tree=args.tree.resolve()))
            if args.otel:
                args.discard_url, args.discard_port = start_discard(procs)
                targets.append(start_full_otel(procs, upstream, args.discard_url,
                                               args.tree.resolve(), args.otel_sample))
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
    return targets


def _measure_logged(load: WrkLoad | PythonLoad, target: Target, c: int, r: int,
                    args: argparse.Namespace) -> Point:
    log(f"bench: {target.name} c={c} round {r + 1}/{args.rounds} ...")
    point = measure(load, target, c, args.duration, args.warmup)
    log(f"bench: {target.name} c={c}: {point.rps:.0f} req/s, p50 "
        f"{point.p50_ms:.3f} ms, p99 {point.p99_ms:.3f} ms, errors "
        f"{point.errors + point.non_2xx}, CPU "
        f"{_fmt(point.cpu_us_per_request, '.0f')} us/req, machine busy "
        f"{_fmt(point.busy_cores, '.2f')} cores")
    return point


def _measure_all(load: WrkLoad | PythonLoad, targets: list[Target],
                 args: argparse.Namespace) -> list[Point]:
    # Concurrency-major and interleaved: on a shared machine a burst of outside load
    # then hits every target alike; each round starts with the next target.
    measured: dict[tuple[str, int], list[Point]] = {}
    for c in args.levels:
        for r in range(args.rounds):
            shift = r % len(targets)
            for target in targets[shift:] + targets[:shift]:
                point = _measure_logged(load, target, c, r, args)
                measured.setdefault((target.name, c), []).append(point)
                time.sleep(0.2)
    return [combine(measured[(t.name, c)]) for t in targets for c in args.levels]


def _config(args: argparse.Namespace, plan: Plan,
            pin: tuple[set[int], set[int]] | None) -> dict[str, Any]:
    return {"duration": args.duration, "warmup": args.warmup, "rounds": args.rounds,
            "pinning": {"proxy_cpus": sorted(pin[0]), "other_cpus": sorted(pin[1])}
            if pin else None,
            "concurrency": args.levels, "loadgen": plan.loadgen,
            "upstream": plan.upstream_kind, "path": REQUEST_PATH,
            "headers": {**FUNNEL_HEADERS,
                        "X-Checkout-Session": f"{SESSIONS} rotating units"},
            "body_bytes": len(BODY),
            "otel_sample": args.otel_sample if args.otel else None}


def _run_in(procs: Processes, args: argparse.Namespace, plan: Plan,
            loadavg_at_start: list[float] | None) -> int:
    pin = procs.pin
    log(f"bench: work directory {procs.workdir}; loadgen={plan.loadgen}, "
        f"upstream={plan.upstream_kind}, "
        + (f"proxies on CPU {sorted(pin[0])}, the rest on CPU {sorted(pin[1])}"
           if pin else "no CPU pinning"))
    if args.otel and "full" not in plan.wanted:
        raise HarnessError("--otel compares with the full proxy: keep full in --targets")
    targets = _start_targets(procs, args, plan)
    load: WrkLoad | PythonLoad = WrkLoad(plan.wrk, procs) if plan.loadgen == "wrk" and plan.wrk \
        else PythonLoad()
    points = _measure_all(load, targets, args)
    profiles: list[dict[str, Any]] = []
    if args.profile is not None:
        profiles = profile_all(load, targets, args.duration, args.profile, procs)
    report, checks = build_report(_config(args, plan, pin), loadavg_at_start, targets, points,
                                  profiles, _exported(args, procs, targets))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    missed = any(c.status == "FAIL" for c in checks)
    return 1 if missed and args.fail_on_miss else 0


def _exported(args: argparse.Namespace, procs: Processes,
              targets: list[Target]) -> dict[str, Any] | None:
    """What the traced proxy exported to the discard receiver (--otel), once it has stopped
    (it exports the spans still queued when it shuts down)."""
    port = getattr(args, "discard_port", None)
    if port is None:
        return None
    for target in targets:
        if target.name == OTEL_TARGET and target.child is not None:
            procs.stop(target.child)
    try:
        status, _, body = http_get(port, "/stats")
    except OSError as exc:
        log(f"bench: the OTLP discard receiver did not answer: {exc}")
        return None
    return json.loads(body) if status == 200 else None


def run(args: argparse.Namespace) -> int:
    plan = _plan(args)
    loadavg_at_start = loadavg()
    pin = cpu_split() if args.pin == "auto" else None
    if pin is not None:
        os.sched_setaffinity(0, pin[1])  # the harness and the Python load generator
    workdir = Path(tempfile.mkdtemp(prefix="strangler-bench-"))
    procs = Processes(workdir, pin)
    try:
        return _run_in(procs, args, plan, loadavg_at_start)
    finally:
        clean_up(procs, workdir, args.keep_logs, "bench")


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------

def _serve_role(argv: list[str]) -> int:
    """A child process of the harness: `_upstream --port N`, `_baseline --port N
    --upstream URL` or `_discard --port N`."""
    role = argparse.ArgumentParser(prog=f"bench {argv[0]}")
    role.add_argument("--port", type=int, required=True)
    role.add_argument("--upstream")
    opts = role.parse_args(argv[1:])
    if argv[0] == "_upstream":
        serve_upstream(opts.port)
    elif argv[0] == "_discard":
        serve_discard(opts.port)
    else:
        serve_baseline(opts.port, opts.upstream)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("_upstream", "_baseline", "_discard"):
        return _serve_role(argv)
    args = parse_args(argv)
    unwind_on_signals("bench")
    try:
        return run(args)
    except HarnessError as exc:
        log(f"bench: error: {exc}")
        return 2
    except KeyboardInterrupt:
        log("bench: interrupted, every process stopped")
        return 130
