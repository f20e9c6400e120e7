"""What the shadow mirror costs the customer, and whether its memory stays bounded.

One `strangler serve` on one fake upstream (the bench's `serve_upstream`, or nginx
`return 200`), which plays both the core and legacy, watching a rules file that the bench
rewrites between points (the proxy reloads it; the bench waits for the new version):

- ``shadow-off``: one funnel whose only rule sends every unit to legacy (``percent: 0``);
- ``shadow-on``: the same rules plus ``shadow: {share: 100}`` on the funnel, so every
  request legacy serves is replayed to the "core" (the same upstream) and compared.

One process for both, so that nothing but the shadow differs: two processes with identical
rules measured 1.1-1.4x apart in p50 on this machine.

The load is cart creation, which the mirror replays: ``POST /carts`` with
``{"country": "IE", "currency": "EUR"}`` through the funnel, ``X-Checkout-Session`` rotating
over many units (wrk with a Lua script when installed, else the bench's asyncio + aiohttp
generator). Before measuring, a probe request checks that ``shadow-on`` really mirrors (its
``/_strangler/state`` counts the probe as compared or dropped) and that ``shadow-off`` does
not; the run stops with an error otherwise.

Comparison (the default): at each concurrency (``-c``, default 1,32,128), ``--rounds``
rounds of ``--duration`` seconds per mode, alternating which goes first. After each
``shadow-on`` point it waits until the mirror's queue has drained (so its replays do not
fall into the next point) and reads the mirror's counters from ``/_strangler/state``:
submitted, sent, compared (and of those, how many while the load ran; the rest were still
queued when it stopped), mismatched and dropped by reason, with the proxy's RSS.
It prints req/s, p50 and p99 per proxy (medians over rounds), the on/off ratios (of the
medians, and per round, each round's two points taken back to back) and PASS/FAIL for the
target of issue 17: with every unit shadowed, p50 and p99 at c=32 within 10% of shadow off.
Drops as ``queue_full`` are expected when the proxy is saturated: the mirror replays only
while the event loop was on the CPU at most ``STRANGLER_SHADOW_MAX_BUSY`` of the time (0.75
by default), with ``STRANGLER_SHADOW_CONCURRENCY`` workers (4), and queues at most
``STRANGLER_SHADOW_QUEUE`` jobs (1,000); beyond that it drops and counts, it never slows
the customer down.

Soak (``--soak SECONDS``): only ``shadow-on``, under steady closed-loop load
(``--soak-concurrency``, default 8) for SECONDS, the sessions rotating over
``--soak-sessions`` units (default 200,000: more than the id map keeps, 100,000, and than
the report's units per funnel, 50,000, so every bounded store fills and evicts). The soak
starts the proxy with ``STRANGLER_SHADOW_MAX_BUSY=1`` unless the environment sets it:
replays then wait only for the loop's lag, run as fast as the loop allows and fill those
stores (with the default 0.75 a saturated proxy replays next to nothing). Every
``--soak-interval`` seconds (default 10) a row: requests, req/s, p50/p99 of the interval, the
proxy's RSS (VmRSS of /proc/PID/status) and the mirror's counters. At the end: RSS at start,
peak and end, the growth over the second half, and the drops by reason.

It reports, it never asserts (``--fail-on-miss``: exit 1 when the 10% target is missed or
the soak's RSS grows more than ``--max-growth-mb`` over its second half).

    python -m loadtests.shadowbench --rounds 3 --duration 5          # c=1,32,128
    python -m loadtests.shadowbench --soak 600                        # 10 minutes
    python -m loadtests.shadowbench -c 32 --profile /tmp/prof         # + py-spy, c=32
    python -m loadtests.shadowbench --loadgen python --upstream python -c 4 --rounds 1 \\
        --duration 1 --warmup 0                                       # the smoke test's

The machine matters: on a shared machine compare the two proxies within one run (which is
why the points alternate), not figures across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from loadtests.bench.common import (
    C_MID,
    FUNNEL_HEADERS,
    HarnessError,
    Request,
    log,
    session_id,
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
from loadtests.bench.servers import Target, start_full, start_upstream
from loadtests.memory import proc_rss_mb

OFF, ON = "shadow-off", "shadow-on"
MAX_RATIO = 1.10  # issue 17: p50 and p99 at c=32 with the shadow within 10% of without
CART_BODY = b'{"country": "IE", "currency": "EUR"}'
RULES = """\
schema: 1
context:
  funnel_header: X-Checkout-Funnel
  country_headers: [X-Country]
  session_header: X-Checkout-Session
funnels:
  - name: {funnel}
    match: {{header: {funnel}}}
    salt: shadowbench-1
{shadow}    rules:
      - {{id: all-legacy, countries: '*', percent: 0}}
"""
SHADOW_SECTION = "    shadow: {share: 100}\n"
DROP_NOTE = ("queue_full drops are expected when the proxy is saturated: the mirror "
             "replays only while the event loop was on the CPU at most "
             "STRANGLER_SHADOW_MAX_BUSY of the time ({max_busy}), with "
             "STRANGLER_SHADOW_CONCURRENCY workers ({concurrency}), and queues at most "
             "STRANGLER_SHADOW_QUEUE jobs ({queue}); beyond that it drops and counts, it "
             "never slows the customer down")
COUNTERS = ("submitted", "sent", "compared", "mismatched")


def cart_request(sessions: int) -> Request:
    """Cart creation through the funnel: what the mirror replays."""
    return Request(method="POST", path="/carts",
                   headers={**FUNNEL_HEADERS, "Content-Type": "application/json"},
                   body=CART_BODY, sessions=sessions)


# --------------------------------------------------------------------------------------------
# The two proxies and the mirror's figures
# --------------------------------------------------------------------------------------------

def rules_path(workdir: Path) -> Path:
    return workdir / "rules.yaml"


def write_rules(workdir: Path, shadow: bool) -> Path:
    path = rules_path(workdir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(RULES.format(funnel=FUNNEL_HEADERS["X-Checkout-Funnel"],
                                shadow=SHADOW_SECTION if shadow else ""))
    tmp.replace(path)  # the proxy's watcher never reads a half-written file
    return path


def start_proxy(procs: Processes, upstream: str) -> tuple[Target, Target]:
    """One `strangler serve` (core and legacy both `upstream`) watching the bench's rules
    file: the same process is `shadow-off` and `shadow-on`, the rules file switching the
    shadow between points (`set_shadow`), so that nothing but the shadow differs (two
    processes differed by more than 10% with identical rules)."""
    on = start_full(procs, upstream, "shadow", rules=write_rules(procs.workdir, True))
    base = "`strangler serve`, 1 worker, every unit to legacy (percent 0), "
    return (replace(on, name=OFF, description=base + "no shadow (the same process)"),
            replace(on, name=ON, description=base + "shadow share 100%"))


def set_shadow(target: Target, workdir: Path, timeout: float = 30.0) -> None:
    """Switch the proxy's rules to `target`'s mode and wait until it routes by them."""
    before = rules_version(target.port)
    shadow = target.name == ON
    text = rules_path(workdir).read_text()
    if (SHADOW_SECTION in text) == shadow:
        return
    write_rules(workdir, shadow)
    deadline = time.monotonic() + timeout
    while rules_version(target.port) == before:
        if time.monotonic() > deadline:
            raise HarnessError(f"the proxy did not load the rules with the shadow "
                               f"{'on' if shadow else 'off'} within {timeout:.0f} s")
        time.sleep(0.05)


def rules_version(port: int) -> Any:
    status, _, body = http_get(port, "/_strangler/state", timeout=5.0)
    if status != 200:
        raise HarnessError(f"/_strangler/state answered {status}")
    return json.loads(body).get("rules_version")


def mirror_state(port: int) -> dict[str, Any]:
    """The mirror's figures: the `shadow` object of the proxy's /_strangler/state."""
    status, _, body = http_get(port, "/_strangler/state", timeout=5.0)
    if status != 200:
        raise HarnessError(f"/_strangler/state answered {status}")
    shadow = json.loads(body).get("shadow")
    if not isinstance(shadow, dict):
        raise HarnessError("/_strangler/state has no `shadow` object")
    return shadow


def rss_mb(target: Target) -> float | None:
    """VmRSS of the proxy (`strangler serve` with one worker serves in-process)."""
    if target.child is None:
        return None
    with contextlib.suppress(OSError, HarnessError):
        return round(proc_rss_mb(target.child.proc.pid), 1)
    return None


def post_cart(port: int, unit: str) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", "/carts", body=CART_BODY, headers={
            **FUNNEL_HEADERS, "Content-Type": "application/json", "X-Checkout-Session": unit})
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def _settled(state: dict[str, Any]) -> int:
    return int(state.get("compared", 0)) + sum(int(n) for n in state.get("dropped", {}).values())


def probe(off: Target, on: Target, workdir: Path, timeout: float = 10.0) -> dict[str, Any]:
    """One cart creation with the shadow on and one with it off: both served by legacy under
    the all-legacy rule; the mirror counts the first as compared or dropped and never sees
    the second. Raises HarnessError (with the proxy's log) otherwise."""
    unit = session_id(10**9)  # outside every load's rotation
    deltas: dict[str, dict[str, Any]] = {}
    for target in (on, off):
        set_shadow(target, workdir)
        before = mirror_state(target.port)
        status, headers = post_cart(target.port, unit)
        decision = headers.get("x-checkout-decision", "")
        if not 200 <= status < 300 or "rule=all-legacy" not in decision:
            raise HarnessError(f"{target.name}: POST /carts expected a 2xx by legacy under "
                               f"rule all-legacy, got {status} {decision!r}")
        deadline = time.monotonic() + (timeout if target is on else 1.0)
        after = mirror_state(target.port)
        while _settled(after) == _settled(before) and time.monotonic() < deadline:
            time.sleep(0.05)
            after = mirror_state(target.port)
        deltas[target.name] = mirror_delta(before, after)
        mirrored = _settled(after) > _settled(before)
        if target is on and not mirrored:
            tail = on.child.log_tail() if on.child else ""
            raise HarnessError(
                f"{ON} did not mirror the probe within {timeout:.0f} s: its /_strangler/state "
                f"shadow is {after} (before: {before}). Is the shadow section loaded, "
                f"is the route mirrored?\n{tail}")
        if target is off and after.get("submitted", 0) != before.get("submitted", 0):
            raise HarnessError(f"{OFF} has no shadow but submitted the probe: {after}")
    log(f"shadowbench: probe mirrored by {ON}: {_fmt_delta(deltas[ON])}")
    return deltas[ON]


def wait_drained(port: int, timeout: float = 60.0) -> float:
    """Until the mirror has nothing queued or in flight: the seconds it took."""
    started = time.monotonic()
    while True:
        state = mirror_state(port)
        if not state.get("queued") and not state.get("in_flight"):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise HarnessError(f"the mirror did not drain in {timeout:.0f} s: {state}")
        time.sleep(0.05)


def mirror_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The counters' growth between two states; drops by reason."""
    out: dict[str, Any] = {k: int(after.get(k, 0)) - int(before.get(k, 0)) for k in COUNTERS}
    reasons = set(before.get("dropped", {})) | set(after.get("dropped", {}))
    out["dropped"] = {r: after.get("dropped", {}).get(r, 0) - before.get("dropped", {}).get(r, 0)
                      for r in sorted(reasons)}
    out["dropped"] = {r: n for r, n in out["dropped"].items() if n}
    return out


def _fmt_drops(dropped: dict[str, int]) -> str:
    return ", ".join(f"{r} {n:,}" for r, n in sorted(dropped.items())) or "none"


def _fmt_delta(delta: dict[str, Any]) -> str:
    return (", ".join(f"{k} {delta[k]:,}" for k in COUNTERS)
            + f", dropped: {_fmt_drops(delta['dropped'])}")


def mirror_settings() -> dict[str, float]:
    """The mirror's settings the proxies start with (they inherit this environment)."""
    return {"concurrency": int(os.environ.get("STRANGLER_SHADOW_CONCURRENCY", "4")),
            "queue": int(os.environ.get("STRANGLER_SHADOW_QUEUE", "1000")),
            "max_busy": float(os.environ.get("STRANGLER_SHADOW_MAX_BUSY", "0.75"))}


# --------------------------------------------------------------------------------------------
# Comparison: shadow off and on, alternating
# --------------------------------------------------------------------------------------------

@dataclass
class MirrorPoint:
    concurrency: int
    round: int
    requests: int  # measured customer requests (the warm-up's are mirrored too)
    live_compared: int  # compared while the load ran (warm-up and measured)
    queued_at_end: int  # queued when the load stopped, replayed during the drain
    drain_seconds: float  # after the point, until nothing was queued or in flight
    rss_mb: float | None  # the proxy's (one process is both modes)
    submitted: int = 0
    sent: int = 0
    compared: int = 0
    mismatched: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


def compare(load: WrkLoad | PythonLoad, off: Target, on: Target,
            args: argparse.Namespace) -> tuple[list[Point], list[MirrorPoint]]:
    """Every concurrency, `rounds` rounds, off and on alternating which goes first: the
    points of each and the mirror's figures of each shadow-on point."""
    rounds: list[Point] = []
    mirror: list[MirrorPoint] = []
    for c in args.levels:
        for r in range(args.rounds):
            for target in ((off, on) if r % 2 == 0 else (on, off)):
                log(f"shadowbench: {target.name} c={c} round {r + 1}/{args.rounds} ...")
                set_shadow(target, args.workdir)
                before = mirror_state(on.port)
                point = measure(load, target, c, args.duration, args.warmup)
                at_end = mirror_state(on.port)
                drain = wait_drained(on.port)
                rounds.append(point)
                line = (f"shadowbench: {target.name} c={c}: {point.rps:.0f} req/s, p50 "
                        f"{point.p50_ms:.3f} ms, p99 {point.p99_ms:.3f} ms, errors "
                        f"{point.errors + point.non_2xx}, RSS {rss_mb(target)} MB")
                if target is on:
                    delta = mirror_delta(before, mirror_state(on.port))
                    live = int(at_end.get("compared", 0)) - int(before.get("compared", 0))
                    queued = int(at_end.get("queued", 0))
                    mirror.append(MirrorPoint(c, r + 1, point.requests, live, queued,
                                              round(drain, 2), rss_mb(on),
                                              **delta))
                    line += (f"; mirror {_fmt_delta(delta)}; {live:,} compared while loaded, "
                             f"{queued:,} queued at the end, drained in {drain:.1f} s")
                log(line)
                time.sleep(0.2)
    return rounds, mirror


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def comparison_report(points: list[Point], mirror: list[MirrorPoint], targets: list[Target],
                      args: argparse.Namespace, loadgen: str, upstream: str,
                      probe_delta: dict[str, Any]) -> dict[str, Any]:
    by: dict[tuple[str, int], list[Point]] = {}
    for p in points:
        by.setdefault((p.target, p.concurrency), []).append(p)
    combined = {key: combine(ps) for key, ps in by.items()}
    ratios: dict[str, Any] = {}
    checks: list[dict[str, Any]] = []
    for c in args.levels:
        off, on = combined[(OFF, c)], combined[(ON, c)]
        paired = [{"rps": _ratio(b.rps, a.rps), "p50": _ratio(b.p50_ms, a.p50_ms),
                   "p99": _ratio(b.p99_ms, a.p99_ms)}
                  for a, b in zip(by[(OFF, c)], by[(ON, c)], strict=True)]
        ratios[str(c)] = {"rps": _ratio(on.rps, off.rps), "p50": _ratio(on.p50_ms, off.p50_ms),
                          "p99": _ratio(on.p99_ms, off.p99_ms),
                          "cpu": _ratio(on.cpu_us_per_request, off.cpu_us_per_request),
                          "per_round": paired}
        if c == C_MID:
            for q in ("p50", "p99"):
                value = ratios[str(c)][q]
                checks.append({
                    "name": f"c={c} {q} shadow on / off <= {MAX_RATIO:.2f}", "value": value,
                    "limit": MAX_RATIO,
                    "status": "N/A" if value is None else
                    ("PASS" if value <= MAX_RATIO else "FAIL")})
    return {
        "mode": "comparison",
        "config": {"rounds": args.rounds, "duration": args.duration, "warmup": args.warmup,
                   "concurrency": args.levels, "loadgen": loadgen, "upstream": upstream,
                   "request": "POST /carts " + CART_BODY.decode(),
                   "sessions": args.sessions, "mirror": mirror_settings(),
                   "pinning": args.pinning, "loadavg_at_start": args.loadavg_at_start,
                   "loadavg_at_end": loadavg()},
        "targets": {t.name: t.description for t in targets},
        "probe": probe_delta,
        "points": [asdict(p) for p in combined.values()],
        "rounds": [asdict(p) for p in points],
        "ratios": ratios,
        "mirror": [asdict(m) for m in mirror],
        "checks": checks,
    }


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_comparison(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [
        (f"shadow comparison: {cfg['request']}, {cfg['sessions']:,} rotating units, "
         f"{cfg['rounds']} round(s) x {cfg['duration']} s per point (+{cfg['warmup']} s "
         f"warm-up), off and on alternating; loadgen {cfg['loadgen']}, upstream "
         f"{cfg['upstream']} (core and legacy)"),
        f"load average at start / end: {cfg['loadavg_at_start']} / {cfg['loadavg_at_end']}",
        "",
    ]
    for name, description in report["targets"].items():
        lines.append(f"  {name:10}  {description}")
    lines += ["", (f"{'target':10} {'c':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
                   f"{'CPU us/req':>10} {'errors':>6}  req/s per round")]
    for p in sorted(report["points"], key=lambda p: (p["concurrency"], p["target"] == ON)):
        per_round = " ".join(str(x) for x in p["rps_rounds"]) or f"{p['rps']:.0f}"
        lines.append(f"{p['target']:10} {p['concurrency']:>4} {p['rps']:>9.0f} "
                     f"{p['p50_ms']:>8.3f} {p['p99_ms']:>8.3f} "
                     f"{_f(p['cpu_us_per_request'], '.0f'):>10} "
                     f"{p['errors'] + p['non_2xx']:>6}  {per_round}")
    lines += ["", ("shadow on / off (ratios of the medians; per round: each round's two "
                   "points, taken back to back):"),
              f"{'c':>4} {'req/s':>7} {'p50':>7} {'p99':>7} {'CPU/req':>7}   per round p50 | p99"]
    for c, r in report["ratios"].items():
        p50s = " ".join(_f(x["p50"], ".2f") for x in r["per_round"])
        p99s = " ".join(_f(x["p99"], ".2f") for x in r["per_round"])
        lines.append(f"{c:>4} {_f(r['rps'], '.3f'):>7} {_f(r['p50'], '.3f'):>7} "
                     f"{_f(r['p99'], '.3f'):>7} {_f(r['cpu'], '.3f'):>7}   {p50s} | {p99s}")
    mirror = cfg["mirror"]
    lines += ["", (f"mirror of {ON} per point (requests: measured; the mirror's counts, "
                   "taken after its queue drained, include the warm-up's; live: compared "
                   "while the load ran; queued: when it stopped, replayed in the drain; RSS: "
                   "the proxy's after the point):"),
              (f"{'c':>4} {'round':>5} {'requests':>9} {'submitted':>9} {'sent':>8} "
               f"{'compared':>8} {'live':>7} {'queued':>7} {'mismatch':>8} {'drain s':>7} "
               f"{'RSS MB':>7}  dropped")]
    for m in report["mirror"]:
        lines.append(f"{m['concurrency']:>4} {m['round']:>5} {m['requests']:>9,} "
                     f"{m['submitted']:>9,} {m['sent']:>8,} {m['compared']:>8,} "
                     f"{m['live_compared']:>7,} {m['queued_at_end']:>7,} "
                     f"{m['mismatched']:>8,} {m['drain_seconds']:>7.1f} "
                     f"{_f(m['rss_mb'], '.1f'):>7}  "
                     f"{_fmt_drops(m['dropped'])}")
    lines += [f"({DROP_NOTE.format(**mirror)})", ""]
    lines.append("target (issue 17): with every unit shadowed, p50 and p99 at c=32 within "
                 "10% of shadow off:")
    if not report["checks"]:
        lines.append(f"  N/A (c={C_MID} not measured)")
    for check in report["checks"]:
        lines.append(f"  {check['status']:4}  {check['name']}: {_f(check['value'], '.3f')}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Soak: shadow on, steady load, RSS and the mirror's counters every interval
# --------------------------------------------------------------------------------------------

@dataclass
class SoakSample:
    seconds: float
    requests: int  # so far
    rps: float  # in the interval
    p50_ms: float
    p99_ms: float
    errors: int  # so far
    rss_mb: float | None
    queued: int
    lanes: int
    submitted: int
    sent: int
    compared: int
    mismatched: int
    dropped: dict[str, int]


def _sample(seconds: float, requests: int, rps: float, p50: float, p99: float, errors: int,
            on: Target, state: dict[str, Any]) -> SoakSample:
    return SoakSample(round(seconds, 1), requests, round(rps, 1), round(p50, 3), round(p99, 3),
                      errors, rss_mb(on), int(state.get("queued", 0)),
                      int(state.get("lanes", 0)), int(state.get("submitted", 0)),
                      int(state.get("sent", 0)), int(state.get("compared", 0)),
                      int(state.get("mismatched", 0)), dict(state.get("dropped", {})))


def _soak_row(s: SoakSample) -> str:
    return (f"{s.seconds:>7.1f} {s.requests:>10,} {s.rps:>7.0f} {s.p50_ms:>7.2f} "
            f"{s.p99_ms:>7.2f} {s.errors:>6} {_f(s.rss_mb, '.1f'):>7} {s.queued:>6,} "
            f"{s.submitted:>10,} {s.sent:>9,} {s.compared:>9,} {s.mismatched:>8,}  "
            f"{_fmt_drops(s.dropped)}")


SOAK_HEADER = (f"{'t s':>7} {'requests':>10} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
               f"{'errors':>6} {'RSS MB':>7} {'queued':>6} {'submitted':>10} {'sent':>9} "
               f"{'compared':>9} {'mismatch':>8}  dropped (so far)")


def soak(load: WrkLoad | PythonLoad, on: Target, args: argparse.Namespace) -> list[SoakSample]:
    samples = [_sample(0, 0, 0, 0, 0, 0, on, mirror_state(on.port))]
    print(SOAK_HEADER, flush=True)
    print(_soak_row(samples[0]), flush=True)
    started = time.monotonic()
    requests = errors = 0
    while (elapsed := time.monotonic() - started) < args.soak - 0.5:
        seconds = min(args.soak_interval, max(1.0, args.soak - elapsed))
        result = load.run(on.port, args.soak_concurrency, seconds)
        requests += result.requests
        errors += result.errors + result.non_2xx
        rps = result.requests / result.seconds if result.seconds else 0.0
        samples.append(_sample(time.monotonic() - started, requests, rps, result.p50_ms,
                               result.p99_ms, errors, on, mirror_state(on.port)))
        print(_soak_row(samples[-1]), flush=True)
    drain = wait_drained(on.port, timeout=120)
    final = _sample(time.monotonic() - started, requests, 0, 0, 0, errors, on,
                    mirror_state(on.port))
    print(f"after the load, the mirror drained in {drain:.1f} s:", flush=True)
    print(_soak_row(final), flush=True)
    samples.append(final)
    return samples


def soak_report(samples: list[SoakSample], args: argparse.Namespace, loadgen: str,
                upstream: str, target: Target) -> dict[str, Any]:
    loaded = samples[:-1]  # the last is after the load stopped
    rss = [s.rss_mb for s in loaded if s.rss_mb is not None]
    half = loaded[len(loaded) // 2]
    end = loaded[-1]
    growth = (end.rss_mb - half.rss_mb) if end.rss_mb is not None and half.rss_mb else None
    final = samples[-1]
    ok = growth is not None and growth <= args.max_growth_mb
    return {
        "mode": "soak",
        "config": {"seconds": args.soak, "interval": args.soak_interval,
                   "concurrency": args.soak_concurrency, "sessions": args.soak_sessions,
                   "loadgen": loadgen, "upstream": upstream,
                   "request": "POST /carts " + CART_BODY.decode(), "mirror": mirror_settings(),
                   "pinning": args.pinning, "loadavg_at_start": args.loadavg_at_start,
                   "loadavg_at_end": loadavg()},
        "target": target.description,
        "samples": [asdict(s) for s in samples],
        "rss_mb": {"start": rss[0] if rss else None, "max": max(rss) if rss else None,
                   "end": rss[-1] if rss else None, "half": half.rss_mb,
                   "growth_second_half": None if growth is None else round(growth, 1),
                   "after_drain": final.rss_mb},
        "totals": {"requests": final.requests, "errors": final.errors,
                   **{k: getattr(final, k) for k in COUNTERS}, "dropped": final.dropped},
        "checks": [{"name": f"RSS growth over the second half <= {args.max_growth_mb:g} MB",
                    "value": growth, "limit": args.max_growth_mb,
                    "status": "N/A" if growth is None else ("PASS" if ok else "FAIL")}],
    }


def render_soak(report: dict[str, Any]) -> str:
    cfg, rss, tot = report["config"], report["rss_mb"], report["totals"]
    secs = report["samples"][-2]["seconds"] or 1
    check = report["checks"][0]
    return "\n".join([
        "",
        (f"shadow soak: {report['target']}; {cfg['request']}, {cfg['sessions']:,} rotating "
         f"units, c={cfg['concurrency']} for {cfg['seconds']:g} s, loadgen {cfg['loadgen']}, "
         f"upstream {cfg['upstream']}"),
        f"load average at start / end: {cfg['loadavg_at_start']} / {cfg['loadavg_at_end']}",
        (f"requests {tot['requests']:,} ({tot['requests'] / secs:.0f}/s), errors "
         f"{tot['errors']}"),
        (f"mirror: submitted {tot['submitted']:,}, sent {tot['sent']:,}, compared "
         f"{tot['compared']:,}, mismatched {tot['mismatched']:,}; dropped: "
         f"{_fmt_drops(tot['dropped'])}"),
        f"({DROP_NOTE.format(**cfg['mirror'])})",
        (f"proxy RSS: start {_f(rss['start'], '.1f')} MB, max {_f(rss['max'], '.1f')} MB, end "
         f"{_f(rss['end'], '.1f')} MB (half-way {_f(rss['half'], '.1f')} MB, after the "
         f"drain {_f(rss['after_drain'], '.1f')} MB)"),
        f"  {check['status']:4}  {check['name']}: {_f(check['value'], '+.1f')}",
    ])


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.shadowbench",
        description="Customer latency with the shadow mirror on and off, and the mirror's "
        "memory under a long run (see the module docstring).")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of unrecorded load before each point")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-c", "--concurrency", default="1,32,128",
                        help="comma-separated concurrencies (default 1,32,128)")
    parser.add_argument("--sessions", type=int, default=1000,
                        help="units the comparison's sessions rotate over (default 1000)")
    parser.add_argument("--soak", type=float, default=0, metavar="SECONDS",
                        help="run the soak (shadow on only) for SECONDS instead of the "
                        "comparison")
    parser.add_argument("--soak-concurrency", type=int, default=8)
    parser.add_argument("--soak-interval", type=float, default=10.0,
                        help="seconds between samples (wrk: whole seconds)")
    parser.add_argument("--soak-sessions", type=int, default=200_000)
    parser.add_argument("--max-growth-mb", type=float, default=10.0,
                        help="the soak's allowed RSS growth over its second half")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--upstream", choices=("auto", "nginx", "python"), default="auto")
    parser.add_argument("--pin", choices=("auto", "off"), default="auto",
                        help="auto: with 2+ CPUs, the proxies on the last CPU, the load "
                        "generator and the upstream on the others")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="after the comparison, py-spy each proxy during an extra c=32 "
                        "run (the bench's --profile); raw stacks in DIR")
    parser.add_argument("--json-out", type=Path, metavar="FILE", help="also write JSON here")
    parser.add_argument("--fail-on-miss", action="store_true",
                        help="exit 1 when a check fails (default: report only)")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not args.levels or min(args.levels) < 1:
        parser.error("--concurrency needs positive integers")
    if args.rounds < 1 or args.sessions < 1 or args.soak_sessions < 1:
        parser.error("--rounds, --sessions and --soak-sessions must be at least 1")
    if args.soak < 0 or args.soak_interval <= 0 or args.soak_concurrency < 1:
        parser.error("--soak, --soak-interval and --soak-concurrency must be positive")
    return args


def profile_modes(load: WrkLoad | PythonLoad, targets: list[Target],
                  args: argparse.Namespace, procs: Processes) -> list[dict[str, Any]]:
    """py-spy on the proxy in each mode: the rules switched to that mode first (the two
    targets are one process)."""
    profiles: list[dict[str, Any]] = []
    for target in targets:
        set_shadow(target, args.workdir)
        profiles += profile_all(load, [target], args.duration, args.profile, procs)
    return profiles


def run(args: argparse.Namespace) -> int:
    wrk = shutil.which("wrk")
    if args.loadgen == "wrk" and not wrk:
        raise HarnessError("--loadgen wrk: wrk is not installed")
    nginx = nginx_binary()
    if args.upstream == "nginx" and not nginx:
        raise HarnessError("--upstream nginx: nginx is not installed")
    use_wrk = wrk is not None and args.loadgen != "python"
    upstream_kind = "nginx" if nginx and args.upstream != "python" else "python"
    args.loadavg_at_start = loadavg()
    pin = cpu_split() if args.pin == "auto" else None
    args.pinning = {"proxy_cpus": sorted(pin[0]), "other_cpus": sorted(pin[1])} if pin else None
    if pin is not None:
        os.sched_setaffinity(0, pin[1])  # this process and the Python load generator
    if args.soak:  # the memory worst case: replay as fast as the loop allows (docstring)
        os.environ.setdefault("STRANGLER_SHADOW_MAX_BUSY", "1")
    workdir = Path(tempfile.mkdtemp(prefix="strangler-shadowbench-"))
    procs = Processes(workdir, pin)
    loadgen = "wrk" if use_wrk else "python"
    try:
        log(f"shadowbench: work directory {workdir}; loadgen {loadgen}, upstream "
            f"{upstream_kind}; mirror {mirror_settings()}")
        _, upstream = start_upstream(procs, upstream_kind)
        off, on = start_proxy(procs, upstream)
        args.workdir = workdir
        probed = probe(off, on, workdir)
        sessions = args.soak_sessions if args.soak else args.sessions
        request = cart_request(sessions)
        load: WrkLoad | PythonLoad = (WrkLoad(wrk, procs, request, "shadowbench.lua")
                                      if use_wrk and wrk else PythonLoad(request))
        if args.soak:
            set_shadow(on, workdir)
            samples = soak(load, on, args)
            report = soak_report(samples, args, loadgen, upstream_kind, on)
            text = render_soak(report)
        else:
            points, mirror = compare(load, off, on, args)
            report = comparison_report(points, mirror, [off, on], args, loadgen,
                                       upstream_kind, probed)
            text = render_comparison(report)
            if args.profile is not None:
                report["profiles"] = profile_modes(load, [off, on], args, procs)
                text += "".join(f"\n\n{p['text']}" for p in report["profiles"])
        if args.json_out:
            args.json_out.write_text(json.dumps(report, indent=2) + "\n")
        print(text, flush=True)
        failed = any(c["status"] == "FAIL" for c in report["checks"])
        return 1 if failed and args.fail_on_miss else 0
    finally:
        clean_up(procs, workdir, args.keep_logs, "shadowbench")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    unwind_on_signals("shadowbench")
    try:
        return run(args)
    except HarnessError as exc:
        log(f"shadowbench: error: {exc}")
        return 2
    except KeyboardInterrupt:
        log("shadowbench: interrupted, every process stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())

