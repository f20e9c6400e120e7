"""Judging and presenting a run: ratios of every target to the baseline and to direct, the
PASS/FAIL checks of the performance issue, the JSON report and its text table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from loadtests.bench.common import (
    C_HIGH,
    C_MID,
    MAX_C1_OVERHEAD_MS,
    MIN_THROUGHPUT_RATIO,
    OTEL_TARGET,
)
from loadtests.bench.load import Point
from loadtests.bench.procs import loadavg, machine_info
from loadtests.bench.servers import Target

Points = dict[tuple[str, int], Point]  # (target, concurrency) -> point


@dataclass
class Check:
    name: str
    target: str
    value: float | None
    limit: float | None
    status: str  # PASS, FAIL, N/A
    detail: str


# --------------------------------------------------------------------------------------------
# Judging
# --------------------------------------------------------------------------------------------

def _rps(by: Points, t: str, c: int) -> float | None:
    p = by.get((t, c))
    return p.rps if p is not None and p.rps > 0 else None


def _cpu(by: Points, t: str, c: int) -> float | None:  # the least disturbed round
    p = by.get((t, c))
    if p is None:
        return None
    return p.cpu_us_per_request_min or p.cpu_us_per_request


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def _target_ratios(by: Points, t: str, levels: list[int]) -> dict[str, Any]:
    p_mid = by.get((t, C_MID))
    c1, d1 = by.get((t, 1)), by.get(("direct", 1))
    return {
        "throughput_vs_baseline": {
            str(c): _ratio(_rps(by, t, c), _rps(by, "baseline", c)) for c in levels},
        # CPU-normalised: baseline CPU per request / this target's (cheapest rounds). Less
        # sensitive than req/s to other load on a shared machine.
        "cpu_efficiency_vs_baseline": {
            str(c): _ratio(_cpu(by, t, c) and _cpu(by, "baseline", c), _cpu(by, t, c))
            for c in levels},
        "c128_over_c32": _ratio(_rps(by, t, C_HIGH), _rps(by, t, C_MID)),
        "p99_over_p50_at_c32": _ratio(p_mid.p99_ms, p_mid.p50_ms) if p_mid else None,
        "c1_p50_overhead_ms": (c1.p50_ms - d1.p50_ms) if c1 and d1 else None,
    }


def _check(name: str, target: str, value: float | None, limit: float | None, ok: bool,
           detail: str) -> Check:
    status = "N/A" if value is None or limit is None else ("PASS" if ok else "FAIL")
    return Check(name, target, value, limit, status, detail)


def _target_checks(t: str, r: dict[str, Any], base: dict[str, Any] | None) -> list[Check]:
    checks: list[Check] = []
    for c in (C_MID, C_HIGH):
        v = r["throughput_vs_baseline"].get(str(c))
        checks.append(_check(f"throughput >= {MIN_THROUGHPUT_RATIO:.1f}x baseline at c={c}", t,
                             v, MIN_THROUGHPUT_RATIO if base else None,
                             v is not None and v >= MIN_THROUGHPUT_RATIO, "req/s ratio"))
    v, lim = r["c128_over_c32"], base["c128_over_c32"] if base else None
    checks.append(_check("c128/c32 throughput ratio >= baseline's", t, v, lim,
                         v is not None and lim is not None and v >= lim,
                         "scaling with concurrency"))
    v, lim = r["p99_over_p50_at_c32"], base["p99_over_p50_at_c32"] if base else None
    checks.append(_check("p99/p50 at c=32 <= baseline's", t, v, lim,
                         v is not None and lim is not None and v <= lim, "tail latency"))
    v = r["c1_p50_overhead_ms"]
    checks.append(_check(f"c=1 p50 overhead over direct <= {MAX_C1_OVERHEAD_MS} ms", t, v,
                         MAX_C1_OVERHEAD_MS, v is not None and v <= MAX_C1_OVERHEAD_MS, "ms"))
    return checks


def analyse(points: list[Point]) -> tuple[dict[str, Any], list[Check]]:
    by = {(p.target, p.concurrency): p for p in points}
    targets = list(dict.fromkeys(p.target for p in points))
    levels = sorted({p.concurrency for p in points})
    ratios: dict[str, Any] = {t: _target_ratios(by, t, levels) for t in targets}
    base = ratios.get("baseline")
    # the performance bar is the proxy's with tracing off; full-otel is compared with full
    full_targets = [t for t in targets if t.startswith("full") and t != OTEL_TARGET]
    checks = [check for t in full_targets for check in _target_checks(t, ratios[t], base)]
    return ratios, checks


def tracing_overhead(points: list[Point], exported: dict[str, Any] | None,
                     ) -> dict[str, Any] | None:
    """full-otel (tracing on) against full (off), per concurrency: ratios of
    on to off for req/s, CPU per request, p50 and p99; and what reached the receiver."""
    by = {(p.target, p.concurrency): p for p in points}
    levels = sorted({c for t, c in by if t == OTEL_TARGET})
    if not levels:
        return None
    rows = []
    for c in levels:
        on, off = by[(OTEL_TARGET, c)], by.get(("full", c))
        if off is None:
            continue
        rows.append({
            "concurrency": c, "rps_off": off.rps, "rps_on": on.rps,
            "rps_ratio": _ratio(on.rps, off.rps),
            "cpu_us_off": _cpu(by, "full", c), "cpu_us_on": _cpu(by, OTEL_TARGET, c),
            "cpu_ratio": _ratio(_cpu(by, OTEL_TARGET, c), _cpu(by, "full", c)),
            "p50_ms_off": off.p50_ms, "p50_ms_on": on.p50_ms,
            "p99_ms_off": off.p99_ms, "p99_ms_on": on.p99_ms,
        })
    return {"rows": rows, "exported": exported,
            "requests_on": sum(by[(OTEL_TARGET, c)].requests for c in levels)}


def build_report(config: dict[str, Any], loadavg_at_start: list[float] | None,
                 targets: list[Target], points: list[Point],
                 profiles: list[dict[str, Any]], exported: dict[str, Any] | None = None,
                 ) -> tuple[dict[str, Any], list[Check]]:
    """The JSON report of a run (what `--json` prints) and its checks; `exported`: what the
    OTLP discard receiver counted (--otel)."""
    ratios, checks = analyse(points)
    report = {
        "config": config,
        "machine": {**machine_info(), "loadavg_at_start": loadavg_at_start,
                    "loadavg_at_end": loadavg()},
        "targets": {t.name: {"description": t.description, "sample": t.sample}
                    for t in targets},
        "points": [asdict(p) for p in points],
        "ratios": ratios,
        "checks": [asdict(c) for c in checks],
        "profiles": profiles,
        "tracing": tracing_overhead(points, exported),
    }
    return report, checks


# --------------------------------------------------------------------------------------------
# The text table
# --------------------------------------------------------------------------------------------

def _fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None or (isinstance(value, float) and math.isnan(value)) \
        else format(value, spec)


def _title(report: dict[str, Any]) -> str:
    cfg = report["config"]
    return (f"checkout strangler proxy benchmark: loadgen={cfg['loadgen']}, "
            f"upstream={cfg['upstream']}, {cfg['duration']} s per point "
            f"(+{cfg['warmup']} s warm-up), {cfg['rounds']} round(s), "
            f"{report['machine']['cpus']} CPUs shared"
            + (f", proxy under test pinned to CPU {cfg['pinning']['proxy_cpus']}, "
               f"load generator and upstream to CPU {cfg['pinning']['other_cpus']}"
               if cfg.get("pinning") else ", no pinning"))


def _points_table(points: list[Point]) -> list[str]:
    base = {p.concurrency: p.rps for p in points if p.target == "baseline"}
    header = (f"{'target':<14}{'c':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'p99/p50':>9}"
              f"{'errors':>8}{'CPU us/req':>12}{'x baseline':>12}{'busy':>7}")
    lines = [header, "-" * len(header)]
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
    return lines


def _ratios_table(ratios: dict[str, Any]) -> list[str]:
    header = (f"{'ratios':<14}{'c128/c32':>10}{'p99/p50@32':>12}{'c1 p50 - direct ms':>20}"
              f"{'CPU efficiency vs baseline (c=32, c=128)':>44}")
    lines = [header]
    for t, r in ratios.items():
        eff = r["cpu_efficiency_vs_baseline"]
        lines.append(f"{t:<14}{_fmt(r['c128_over_c32'], '.2f'):>10}"
                     f"{_fmt(r['p99_over_p50_at_c32'], '.2f'):>12}"
                     f"{_fmt(r['c1_p50_overhead_ms'], '+.3f'):>20}"
                     f"{_fmt(eff.get(str(C_MID)), '.2f'):>36}{_fmt(eff.get(str(C_HIGH)), '.2f'):>8}")
    return lines


def _checks_lines(checks: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["targets (full proxy vs the aiohttp baseline):"]
    for c in checks:
        value = _fmt(c["value"], ".3f", "not measured")
        limit = _fmt(c["limit"], ".3f", "-")
        lines.append(f"  [{c['status']:<4}] {c['target']}: {c['name']}: {value} (limit {limit})")
    return lines


def _tracing_lines(tracing: dict[str, Any], sample: float | None) -> list[str]:
    header = (f"{'tracing':<9}{'c':>5}{'req/s off':>11}{'on':>9}{'on/off':>8}"
              f"{'CPU us/req off':>16}{'on':>6}{'on/off':>8}{'p50 ms off':>12}{'on':>9}"
              f"{'p99 ms off':>12}{'on':>10}")
    share = "100%" if sample is None else f"{sample:.0%}"
    lines = [f"OpenTelemetry tracing: full-otel (on, {share} sampled) vs full (off), same run:",
             header]
    for r in tracing["rows"]:
        lines.append(
            f"{'':<9}{r['concurrency']:>5}{r['rps_off']:>11.0f}{r['rps_on']:>9.0f}"
            f"{_fmt(r['rps_ratio'], '.2f'):>8}{_fmt(r['cpu_us_off'], '.0f'):>16}"
            f"{_fmt(r['cpu_us_on'], '.0f'):>6}{_fmt(r['cpu_ratio'], '.2f'):>8}"
            f"{_fmt(r['p50_ms_off'], '.3f'):>12}{_fmt(r['p50_ms_on'], '.3f'):>9}"
            f"{_fmt(r['p99_ms_off'], '.3f'):>12}{_fmt(r['p99_ms_on'], '.3f'):>10}")
    exported = tracing.get("exported") or {}
    spans = exported.get("spans")
    lines.append(f"  exported: {exported.get('posts', '-')} OTLP requests, "
                 f"{exported.get('bytes', '-')} bytes, {'-' if spans is None else spans} spans "
                 f"for {tracing['requests_on']} measured requests (2 spans a sampled request; "
                 "warm-ups and probes add some; fewer at 100%: the batch queue dropped spans)")
    return lines


def render(report: dict[str, Any]) -> str:
    points = [Point(**p) for p in report["points"]]
    lines = [_title(report), ""]
    lines += _points_table(points)
    lines.append("")
    lines += _ratios_table(report["ratios"])
    lines.append("")
    lines += _checks_lines(report["checks"])
    if report.get("tracing"):
        lines.append("")
        lines += _tracing_lines(report["tracing"], report["config"].get("otel_sample"))
    for profile in report.get("profiles") or ():
        lines.append("")
        lines.append(profile["text"])
    return "\n".join(lines)
