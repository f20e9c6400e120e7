"""Kill latency as the operator sees it: from the start of `strangler kill` until the last
proxy replica serves legacy for that funnel, under load.

Starts an upstream, N proxy replicas as `strangler serve` runs them (separate processes),
sharing Redis (pub/sub plus polling) or one SQLite file (polling), and a load generator
(a separate process: a few asyncio + aiohttp clients at a bounded rate, spread over the
replicas) that keeps running through every trial. Then, per mode, two phases:

- **kill** (the operator's view): clear the switch, wait until every replica routes to core
  again, then take `time.perf_counter()` just before `subprocess.Popen` of
  `strangler kill --funnel warranties --reason ...` and probe every replica with real routed
  requests (a fresh unit each, every `--probe-interval`) until it answers legacy. Per trial:
  spawn -> last replica (the figure the targets judge), split into spawn -> CLI exit and
  exit -> last replica (negative when every replica obeyed before the CLI had exited); also
  spawn -> store write and store write -> last replica, from the wall-clock time the CLI
  recorded in the kill switch (`KillSwitch.at`, taken just before the write), and the CLI
  process's CPU time. One untimed kill comes first (reported as the warm-up).
- **propagation**: the same, but the switch is set in this process exactly as `strangler
  kill` sets it (`control.killswitch.kill` on the same store): store write committed -> last
  replica, without the CLI.

The machine is often shared: from /proc it also reports how many cores the whole machine,
this benchmark's processes and anything else kept busy, per trial and per run, and which
other processes used the most.

It prints p50 and p99 (the max when n < 100: the table says which) per mode, PASS/FAIL
against the targets (kill p99 <= 0.5 s with Redis, <= 0.6 s embedded), and with `--json`
the same as JSON. It reports, never asserts (`--fail-on-miss` to exit 1 on a FAIL).

Examples::

    python -m loadtests.killswitch                   # both modes, 3 replicas, 30 + 50 trials
    python -m loadtests.killswitch --mode redis --trials 100 --json
    python -m loadtests.killswitch --redis-url redis://127.0.0.1:6379/9   # an existing Redis

Redis mode starts a redis-server of its own on a free port (nothing saved) unless
`--redis-url` is given. Loopback only; every process it starts is stopped when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from control import operations as control
from control.store import ControlStore, open_store

REPO = Path(__file__).resolve().parents[1]
FUNNEL = "warranties"
TARGETS_MS = {"redis": 500.0, "embedded": 600.0}  # kill latency p99, spawn -> last replica
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
PHASES = {  # key of a trial -> what it measures
    "total_ms": "spawn -> last replica",
    "cli_exit_ms": "spawn -> CLI exit",
    "exit_to_last_ms": "CLI exit -> last replica",
    "spawn_to_write_ms": "spawn -> store write",
    "write_to_last_ms": "store write -> last replica",
    "cli_cpu_ms": "CLI CPU time (user+sys)",
}


class HarnessError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def free_port() -> int:
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
    raise HarnessError(f"{url} did not come up")


def base_env() -> dict[str, str]:
    """This environment without STRANGLER_* settings: the children get only ours (an
    operator's STRANGLER_REDIS_URL must not turn the embedded mode into Redis)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("STRANGLER_")}


@contextmanager
def process(args: list[str], env: dict[str, str] | None = None, log: Path | None = None,
            cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    out = open(log, "wb") if log else None  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(args, env={**base_env(), **(env or {})}, cwd=cwd,
                            stdin=subprocess.DEVNULL, stdout=out or subprocess.DEVNULL,
                            stderr=subprocess.STDOUT if out else subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if out:
            out.close()


def strangler() -> list[str]:
    exe = shutil.which("strangler", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "cli.main"]


@contextmanager
def own_redis(workdir: Path) -> Iterator[tuple[str, int]]:
    """A redis-server of the benchmark's own on a free port, nothing saved."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise HarnessError("no redis-server binary: give --redis-url")
    port = free_port()
    with process([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no", "--dir", str(workdir)]) as proc:
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except redis.RedisError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise HarnessError("redis-server did not start")
            time.sleep(0.05)
        client.close()
        yield url, proc.pid


# --------------------------------------------------------------------------------------------
# Background load (its own process: `python -m loadtests.killswitch _load ...`)
# --------------------------------------------------------------------------------------------


async def _load_client(session: aiohttp.ClientSession, urls: list[str], rate: float,
                       stop: asyncio.Event, stats: dict[str, Any], first: int) -> None:
    """One client at `rate` requests/s (paced, no bursts to catch up), round-robin over the
    replicas: 80% through the warranties funnel (500 returning units, sticky), 20% matching
    no funnel."""
    interval = 1 / rate
    next_at = time.perf_counter() + random.uniform(0, interval)
    i = first
    while not stop.is_set():
        delay = next_at - time.perf_counter()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                return
            except TimeoutError:
                pass
        next_at = max(next_at + interval, time.perf_counter())
        headers = {"X-Checkout-Session": f"load-{random.randrange(500)}"}
        if random.random() < 0.8:
            headers["X-Checkout-Funnel"] = FUNNEL
        started = time.perf_counter()
        try:
            async with session.get(urls[i % len(urls)] + "/carts", headers=headers) as resp:
                await resp.read()
                backend = resp.headers.get("x-checkout-backend", "none")
                ok = resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            ok, backend = False, "none"
        stats["latencies"].append(time.perf_counter() - started)
        stats["requests"] += 1
        stats["errors"] += 0 if ok else 1
        stats["backends"][backend] = stats["backends"].get(backend, 0) + 1
        i += 1


async def _load(urls: list[str], rate: float, clients: int, max_seconds: float) -> dict[str, Any]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.call_later(max_seconds, stop.set)
    stats: dict[str, Any] = {"requests": 0, "errors": 0, "backends": {}, "latencies": []}
    started = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(_load_client(session, urls, rate / clients, stop, stats, n)
                               for n in range(clients)))
    latencies = sorted(stats.pop("latencies"))
    seconds = time.perf_counter() - started
    return {**stats, "seconds": round(seconds, 3),
            "rate": round(stats["requests"] / seconds, 1) if seconds else 0.0,
            "p50_ms": round(1000 * statistics.median(latencies), 3) if latencies else None,
            "p99_ms": round(1000 * nearest_rank(latencies, 0.99), 3) if latencies else None}


def load_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="loadtests.killswitch _load")
    parser.add_argument("--url", action="append", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    report = asyncio.run(_load(args.url, args.rate, args.clients, args.max_seconds))
    args.out.write_text(json.dumps(report))
    return 0


@contextmanager
def background_load(urls: list[str], rate: float, clients: int, max_seconds: float,
                    workdir: Path, pids: list[int]) -> Iterator[dict[str, Any]]:
    """Yields a dict filled, when the block ends, with what the load generator did; adds
    the generator's pid to `pids` while it runs."""
    report: dict[str, Any] = {"rate_asked": rate, "clients": clients}
    if rate <= 0 or clients <= 0:
        yield report
        return
    out = workdir / "load.json"
    args = [sys.executable, "-m", "loadtests.killswitch", "_load", "--rate", str(rate),
            "--clients", str(clients), "--max-seconds", str(max_seconds), "--out", str(out)]
    for url in urls:
        args += ["--url", url]
    with process(args, log=workdir / "load.log", cwd=REPO,
                 env={"PYTHONPATH": os.pathsep.join(
                     p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}) as proc:
        pids.append(proc.pid)
        time.sleep(0.5)  # the load is on before the first trial
        if proc.poll() is not None:
            raise HarnessError("load generator exited:\n"
                               + (workdir / "load.log").read_text(errors="replace")[-2000:])
        try:
            yield report
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            if out.exists():
                report.update(json.loads(out.read_text()))


# --------------------------------------------------------------------------------------------
# Trials
# --------------------------------------------------------------------------------------------


def _probe_headers() -> dict[str, str]:
    return {"X-Checkout-Funnel": FUNNEL, "X-Checkout-Session": f"probe-{uuid.uuid4().hex}"}


async def _backend(session: aiohttp.ClientSession, url: str) -> str | None:
    async with session.get(url + "/carts", headers=_probe_headers()) as resp:
        await resp.read()
        return resp.headers.get("x-checkout-backend")


async def _until_legacy(session: aiohttp.ClientSession, url: str, interval: float) -> float:
    """perf_counter() when this replica first answered a fresh unit from legacy."""
    while True:
        if await _backend(session, url) == "legacy":
            return time.perf_counter()
        if interval > 0:
            await asyncio.sleep(interval)


def _reset(store: ControlStore) -> None:
    """Clear the warranties switch if a trial left it set (unkill refuses an unset one)."""
    if FUNNEL in store.kill_switches():
        control.unkill(store, FUNNEL, actor="bench", reason="trial reset")


async def _back_to_core(store: ControlStore, session: aiohttp.ClientSession,
                        urls: list[str]) -> None:
    """Clear the switch and wait until every replica routes to core again; then a random
    pause, so that kills do not come in step with the replicas' polls."""
    _reset(store)
    deadline = time.monotonic() + 10
    while True:
        backends = await asyncio.gather(*(_backend(session, u) for u in urls))
        if all(b == "core" for b in backends):
            break
        if time.monotonic() > deadline:
            raise HarnessError(f"replicas did not go back to core: {backends}")
        await asyncio.sleep(0.02)
    await asyncio.sleep(random.uniform(0.05, 0.5))


def _all_legacy(session: aiohttp.ClientSession, urls: list[str],
                interval: float) -> list[asyncio.Task[float]]:
    return [asyncio.create_task(_until_legacy(session, u, interval)) for u in urls]


async def _gather_probes(probes: list[asyncio.Task[float]], timeout: float = 10) -> list[float]:
    try:
        return list(await asyncio.wait_for(asyncio.gather(*probes), timeout))
    except TimeoutError:
        raise HarnessError(f"not every replica served legacy within {timeout} s") from None
    finally:
        for probe in probes:
            probe.cancel()


async def _propagation_trial(store: ControlStore, session: aiohttp.ClientSession,
                             urls: list[str], interval: float) -> dict[str, Any]:
    """Store write committed (in this process, as `strangler kill` writes) -> last replica."""
    await _back_to_core(store, session, urls)
    probes = _all_legacy(session, urls, interval)
    await asyncio.to_thread(control.kill, store, FUNNEL, actor="bench",
                            reason="propagation trial")
    written = time.perf_counter()
    seen = await _gather_probes(probes)
    return {"write_to_last_ms": 1000 * (max(seen) - written),
            "replicas_ms": [1000 * (s - written) for s in seen]}


@dataclass(frozen=True)
class CliRun:
    spawned: float  # perf_counter() just before Popen
    wall: float  # time.time() just before Popen
    exited: float  # perf_counter() when the process had exited
    returncode: int
    stderr: bytes
    cpu: float  # CPU seconds (user + system) the process used


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped children only
    return usage.ru_utime + usage.ru_stime


def _run_cli(args: list[str], env: dict[str, str]) -> CliRun:
    """Spawn the CLI and wait for it (in a worker thread: the probes go on meanwhile)."""
    cpu = _children_cpu()  # no other child of this process ends meanwhile
    wall = time.time()
    spawned = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=30)
    exited = time.perf_counter()
    return CliRun(spawned, wall, exited, proc.returncode, err, _children_cpu() - cpu)


async def _kill_trial(store: ControlStore, session: aiohttp.ClientSession, urls: list[str],
                      interval: float, cli_env: dict[str, str], n: int,
                      pids: list[int]) -> dict[str, Any]:
    """`strangler kill` spawned -> last replica serves legacy, and its split; with the CPU
    of anything else on the machine meanwhile (`others_cores`)."""
    await _back_to_core(store, session, urls)
    meter = CpuMeter(pids)
    probes = _all_legacy(session, urls, interval)
    await asyncio.sleep(0)  # the probes are in flight before the spawn
    args = [*strangler(), "kill", "--funnel", FUNNEL, "--reason", f"kill-latency trial {n}"]
    try:
        run = await asyncio.to_thread(_run_cli, args, cli_env)
    except BaseException:
        for probe in probes:
            probe.cancel()
        raise
    if run.returncode != 0:
        for probe in probes:
            probe.cancel()
        raise HarnessError(f"strangler kill exited {run.returncode}: "
                           f"{run.stderr.decode(errors='replace')[-2000:]}")
    spawned, exited = run.spawned, run.exited
    seen = await _gather_probes(probes)
    cpu = meter.stop()
    last = max(seen)
    switch = store.kill_switches()[FUNNEL]
    written = spawned + (switch.at - run.wall)  # the CLI's wall clock on the perf_counter scale
    return {"total_ms": 1000 * (last - spawned), "cli_exit_ms": 1000 * (exited - spawned),
            "exit_to_last_ms": 1000 * (last - exited),
            "spawn_to_write_ms": 1000 * (written - spawned),
            "write_to_last_ms": 1000 * (last - written),
            "replicas_ms": [1000 * (s - spawned) for s in seen],
            "cli_cpu_ms": 1000 * run.cpu, "others_cores": cpu.get("others_cores")}


async def _trials(store: ControlStore, urls: list[str], kill_trials: int,
                  propagation_trials: int, interval: float, cli_env: dict[str, str],
                  pids: list[int]) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        propagation = [await _propagation_trial(store, session, urls, interval)
                       for _ in range(propagation_trials)]
        # One `strangler kill` first, not counted: the first run after a while reads the
        # interpreter and the CLI's modules from disk (reported as `warmup`).
        warmup = await _kill_trial(store, session, urls, interval, cli_env, 0, pids)
        kills = [await _kill_trial(store, session, urls, interval, cli_env, n + 1, pids)
                 for n in range(kill_trials)]
        _reset(store)
    return {"warmup": warmup, "kill": kills, "propagation": propagation}


# --------------------------------------------------------------------------------------------
# CPU accounting (Linux /proc): was the machine shared with something else during the run?
# --------------------------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine_busy() -> float | None:
    """CPU seconds the whole machine spent busy since boot (None off Linux)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / TICK


def _process_cpu(pid: int, children: bool = True) -> float:
    """CPU seconds of a process, and of its reaped children unless `children` is False
    (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return sum(int(x) for x in fields[11:15 if children else 13]) / TICK


def _ours(pids: list[int]) -> float:
    """CPU seconds of this process, the children it reaped (the CLI runs) and `pids`."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system + sum(
        _process_cpu(pid) for pid in pids)


def _all_processes() -> dict[int, tuple[str, float]]:
    """Every process of the machine: pid -> (command line, its own CPU seconds; not its
    reaped children's, which land all at once when a long-lived child ends)."""
    found = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            found[int(entry)] = (cmd[:100], _process_cpu(int(entry), children=False))
    return found


class CpuMeter:
    """From `start()` to `stop()`: the cores the machine was busy on average, how many of
    them were this benchmark's processes, and the rest (others sharing the machine); with
    `who`, the other processes that used the most."""

    def __init__(self, pids: list[int], who: bool = False) -> None:
        self.pids = pids
        self.who = who
        self.start()

    def start(self) -> None:
        self.machine, self.ours, self.t = _machine_busy(), _ours(self.pids), time.monotonic()
        self.processes = _all_processes() if self.who else {}

    def stop(self) -> dict[str, Any]:
        machine, ours, seconds = _machine_busy(), _ours(self.pids), time.monotonic() - self.t
        report: dict[str, Any] = {"cpus": os.cpu_count()}
        if machine is not None and self.machine is not None and seconds > 0:
            busy, mine = (machine - self.machine) / seconds, (ours - self.ours) / seconds
            report.update(busy_cores=round(busy, 2), ours_cores=round(mine, 2),
                          others_cores=round(max(0.0, busy - mine), 2))
        if self.who:
            skip = {os.getpid(), *self.pids}
            used = [(cpu - self.processes[pid][1], cmd)
                    for pid, (cmd, cpu) in _all_processes().items()
                    if pid in self.processes and pid not in skip]
            report["top_others"] = [
                {"cores": round(c / seconds, 2), "cmd": cmd}
                for c, cmd in sorted(used, reverse=True)[:3] if c / seconds >= 0.05]
        return report


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    """The q-quantile by nearest rank: with n < 100 the 0.99 one is the max."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summarize(values: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return {"n": 0}
    return {"n": n, "p50": statistics.median(ordered), "p99": nearest_rank(ordered, 0.99),
            "p99_is_max": n < 100, "max": ordered[-1], "min": ordered[0]}


# --------------------------------------------------------------------------------------------
# One mode
# --------------------------------------------------------------------------------------------


def run_mode(mode: str, replicas: int = 3, trials: int = 30, redis_url: str | None = None, *,
             propagation_trials: int = 50, load_rate: float = 200, load_clients: int = 4,
             probe_interval: float = 0.005) -> dict[str, Any]:
    """Both phases in one mode ("redis" or "embedded"); in Redis mode `redis_url` names the
    server (None: a redis-server of its own). Times in ms."""
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="ks-bench-") as tmp:
        work = Path(tmp)
        pids: list[int] = []  # the benchmark's own long-running processes
        if mode == "redis" and redis_url is None:
            redis_url, redis_pid = stack.enter_context(own_redis(work))
            pids.append(redis_pid)
        url = redis_url if mode == "redis" else None
        (work / "upstream.py").write_text(UPSTREAM)
        up_port = free_port()
        pids.append(stack.enter_context(process(
            [sys.executable, "-m", "uvicorn", "--app-dir", tmp, "upstream:app", "--port",
             str(up_port), "--log-level", "warning"], log=work / "upstream.log")).pid)
        upstream = f"http://127.0.0.1:{up_port}"
        wait_up(upstream)
        db = str(work / "control.sqlite3")
        store = open_store(url, db)
        stack.callback(store.close)
        control.apply_rules_text(store, RULES, source="bench", actor="bench", reason="bench")
        env = {"STRANGLER_DB_PATH": db, "STRANGLER_LOG_LEVEL": "warning"}
        if url:
            env["STRANGLER_REDIS_URL"] = url
        urls = []
        for i in range(replicas):
            port = free_port()
            pids.append(stack.enter_context(process(
                [*strangler(), "serve", "--port", str(port), "--core-url", upstream,
                 "--legacy-url", upstream], env, log=work / f"replica-{i}.log")).pid)
            urls.append(f"http://127.0.0.1:{port}")
        for u in urls:
            wait_up(u + "/_strangler/healthz")
        if store.identity() is None:
            raise HarnessError("the replicas gave the store no identity")
        cli_env = {**base_env(), "STRANGLER_DB_PATH": db}
        if url:
            cli_env["STRANGLER_REDIS_URL"] = url
        budget = 60 + 3 * (trials + propagation_trials)  # the load stops by itself after it
        with background_load(urls, load_rate, load_clients, budget, work, pids) as load:
            meter = CpuMeter(pids, who=True)
            raw = asyncio.run(_trials(store, urls, trials, propagation_trials,
                                      probe_interval, cli_env, pids))
            cpu = meter.stop()
            seconds = time.monotonic() - meter.t
    kill = {key: summarize([t[key] for t in raw["kill"]]) for key in PHASES}
    worst = max(raw["kill"], key=lambda t: t["total_ms"]) if raw["kill"] else None
    target = TARGETS_MS[mode]
    p99 = kill["total_ms"].get("p99")
    return {
        "mode": mode, "replicas": replicas, "seconds": round(seconds, 1),
        "kill": {**kill, "trials": raw["kill"], "worst": worst, "warmup": raw["warmup"]},
        "propagation": {"write_to_last_ms": summarize(
            [t["write_to_last_ms"] for t in raw["propagation"]]), "trials": raw["propagation"]},
        "load": load, "cpu": cpu,
        "check": {"name": f"{mode}: kill p99 (spawn -> last of {replicas} replicas) <= "
                          f"{target:.0f} ms", "target_ms": target, "measured_ms": p99,
                  "status": "N/A" if p99 is None else "PASS" if p99 <= target else "FAIL"},
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _q(summary: dict[str, Any], key: str) -> float | None:
    return summary.get(key)


def render(results: list[dict[str, Any]]) -> str:
    lines = []
    if results:
        r0 = results[0]
        load = r0["load"]
        lines.append(f"kill latency as the operator sees it: `strangler kill` spawned -> the "
                     f"last of {r0['replicas']} replicas serves legacy for {FUNNEL}")
        lines.append(f"background load: {load['rate_asked']:g} req/s asked, "
                     f"{load['clients']} aiohttp clients over the replicas, during every trial"
                     if load["rate_asked"] > 0 and load["clients"] > 0 else
                     "background load: none")
    lines.append("")
    lines.append(f"{'mode':<10} {'n':>4} {'p50 ms':>8} {'p99 ms':>8} {'p99 is':>12} "
                 f"{'target':>9}  result")
    for r in results:
        s, c = r["kill"]["total_ms"], r["check"]
        which = "-" if not s.get("n") else "max (n<100)" if s["p99_is_max"] else "p99"
        lines.append(f"{r['mode']:<10} {s.get('n', 0):>4} {_ms(_q(s, 'p50')):>8} "
                     f"{_ms(_q(s, 'p99')):>8} {which:>12} {c['target_ms']:>6.0f} ms  "
                     f"{c['status']}")
    lines.append("")
    lines.append("split, p50 / p99 ms (each phase's own quantiles: they do not add up)")
    lines.append(f"{'phase':<28}" + "".join(f"{r['mode']:>18}" for r in results))
    for key, label in PHASES.items():
        cells = [f"{_ms(_q(r['kill'][key], 'p50'))} / {_ms(_q(r['kill'][key], 'p99'))}"
                 for r in results]
        lines.append(f"{label:<28}" + "".join(f"{cell:>18}" for cell in cells))
    lines.append("")
    for r in results:
        w, warm = r["kill"]["worst"], r["kill"]["warmup"]
        if w:
            lines.append(f"{r['mode']}: slowest trial {w['total_ms']:.1f} ms = spawn -> write "
                         f"{w['spawn_to_write_ms']:.1f} + write -> last replica "
                         f"{w['write_to_last_ms']:.1f} (CLI exited at {w['cli_exit_ms']:.1f}; "
                         f"anything else on the machine: {w['others_cores']} cores); "
                         f"warm-up run, not counted: {warm['total_ms']:.1f} ms")
        shared = [t for t in r["kill"]["trials"] if (t["others_cores"] or 0) > 0.25]
        if shared:
            lines.append(f"  {len(shared)} of {len(r['kill']['trials'])} trials ran while "
                         "something else kept > 0.25 cores busy")
    lines.append("")
    lines.append("propagation without the CLI: store write committed -> last replica")
    lines.append(f"{'mode':<10} {'n':>4} {'p50 ms':>8} {'p99 ms':>8} {'p99 is':>12} "
                 f"{'max ms':>8}")
    for r in results:
        s = r["propagation"]["write_to_last_ms"]
        which = "-" if not s.get("n") else "max (n<100)" if s["p99_is_max"] else "p99"
        lines.append(f"{r['mode']:<10} {s.get('n', 0):>4} {_ms(_q(s, 'p50')):>8} "
                     f"{_ms(_q(s, 'p99')):>8} {which:>12} {_ms(_q(s, 'max')):>8}")
    lines.append("")
    for r in results:
        load = r["load"]
        if "requests" in load:
            lines.append(f"{r['mode']}: load {load['requests']} requests in "
                         f"{load['seconds']:.0f} s ({load['rate']:g} req/s), "
                         f"{load['errors']} errors, p50 {load['p50_ms']} ms, "
                         f"p99 {load['p99_ms']} ms; backends {load['backends']}")
        cpu = r["cpu"]
        if "busy_cores" in cpu:
            lines.append(f"{r['mode']}: CPU during the trials, average cores of {cpu['cpus']}: "
                         f"machine busy {cpu['busy_cores']:.2f}, this benchmark's processes "
                         f"{cpu['ours_cores']:.2f}, anything else {cpu['others_cores']:.2f}")
            if cpu["others_cores"] > 0.25:
                lines.append(f"  WARNING: something else kept {cpu['others_cores']:.2f} cores busy "
                             "during the trials: these figures are not the benchmark's alone")
            for other in cpu.get("top_others", []):
                lines.append(f"  other process: {other['cores']:.2f} cores  {other['cmd']}")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "loadavg": list(os.getloadavg()),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_load"]:
        return load_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["redis", "embedded", "both"], default="both")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--trials", type=int, default=30,
                        help="`strangler kill` trials per mode (default 30)")
    parser.add_argument("--propagation-trials", type=int, default=50,
                        help="store-write trials per mode, without the CLI (default 50; 0: none)")
    parser.add_argument("--load-rate", type=float, default=200,
                        help="background requests/s over all replicas (default 200; 0: none)")
    parser.add_argument("--load-clients", type=int, default=4)
    parser.add_argument("--probe-interval", type=float, default=0.005,
                        help="pause between a replica's probes, s (default 0.005)")
    parser.add_argument("--redis-url", default=None,
                        help="an existing Redis (a database of its own); default: a "
                        "redis-server of the benchmark's own on a free port")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--json-out", type=Path, help="also write the JSON to this file")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 on a FAIL")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.propagation_trials < 0 or args.replicas < 1:
        parser.error("--trials and --replicas must be >= 1, --propagation-trials >= 0")
    logging.getLogger("strangler").setLevel(logging.ERROR)
    modes = ["redis", "embedded"] if args.mode == "both" else [args.mode]
    results = []
    for mode in modes:
        results.append(run_mode(
            mode, args.replicas, args.trials, args.redis_url,
            propagation_trials=args.propagation_trials, load_rate=args.load_rate,
            load_clients=args.load_clients, probe_interval=args.probe_interval))
        if not args.json:
            print(f"{mode}: done in {results[-1]['seconds']:.0f} s", file=sys.stderr)
    report: dict[str, Any] = {"machine": machine(), "argv": argv, "modes": results,
                              "checks": [r["check"] for r in results]}
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(results))
    failed = any(c["status"] == "FAIL" for c in report["checks"])
    return 1 if failed and args.fail_on_miss else 0


if __name__ == "__main__":
    raise SystemExit(main())
