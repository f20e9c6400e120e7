"""Evidence that the judge is right: simulated monitoring runs, A/A and clear regressions.

Each run draws per-request outcomes for both arms (a conversion, a payment, an error, each
Bernoulli; a latency from a lognormal into the histogram of `LATENCY_BOUNDS_MS`), and
every `look_every` requests per arm hands the cumulative counts and the trailing
burn-rate windows to `judge_funnel`, as the monitor does. A run ends at the first trip
(the kill switch latches) or after `samples` requests per arm. Every request counts for
every metric, so "samples per arm" is the number of observations of each metric.

    python -m guardrails.simulate --runs 1000 --detect-runs 200 --seed 1
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace

from guardrails.judge import BUSINESS, judge_funnel, judge_sample_ratio
from guardrails.model import (
    LATENCY_BOUNDS_MS,
    N_LATENCY_BUCKETS,
    ArmStats,
    FunnelWindow,
    Verdict,
)
from guardrails.spec import GuardrailsSpec, SampleRatioSpec
from guardrails.stats import clopper_pearson


@dataclass(frozen=True, slots=True)
class ArmModel:
    """How one arm behaves, per request."""

    conversion: float = 0.30
    payment_success: float = 0.95
    error_rate: float = 0.001
    latency_median_ms: float = 120.0
    latency_sigma: float = 0.5  # of log latency

    @property
    def p95_ms(self) -> float:
        return self.latency_median_ms * math.exp(1.6448536269514722 * self.latency_sigma)

    def latency_cdf(self) -> tuple[float, ...]:
        """P(latency <= edge) for every histogram edge."""
        mu, s = math.log(self.latency_median_ms), self.latency_sigma
        return tuple(0.5 * math.erfc(-(math.log(b) - mu) / (s * math.sqrt(2)))
                     for b in LATENCY_BOUNDS_MS)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    core: ArmModel
    legacy: ArmModel = field(default_factory=ArmModel)
    expected: str | None = None  # the guardrail meant to catch it


BASE = ArmModel()
AA = Scenario("A/A (core = legacy)", BASE)
AT_LIMITS = Scenario(  # every comparison exactly at its default threshold: must not trip
    "at the limits (no trip)",
    replace(BASE, conversion=0.27, payment_success=0.90,
            latency_median_ms=1.5 * BASE.latency_median_ms),
)
REGRESSIONS = (
    Scenario("payment success 95% -> 80%", replace(BASE, payment_success=0.80),
             expected="payment_success"),
    Scenario("error rate 0.1% -> 5%", replace(BASE, error_rate=0.05), expected="error_budget"),
    Scenario("p95 latency x3", replace(BASE, latency_median_ms=3 * BASE.latency_median_ms),
             expected="latency_p95"),
    Scenario("conversion 30% -> 20%", replace(BASE, conversion=0.20), expected="conversion"),
)


@dataclass(frozen=True, slots=True)
class SimConfig:
    samples: int = 20_000  # requests per arm over the monitoring period
    look_every: int = 25  # requests per arm between two looks of the judge
    requests_per_second: float = 2.0  # per arm: maps the burn-rate windows onto requests
    spec: GuardrailsSpec = field(default_factory=GuardrailsSpec)

    @property
    def looks(self) -> int:
        return self.samples // self.look_every


@dataclass(frozen=True, slots=True)
class RunOutcome:
    tripped_at: int | None  # requests per arm at the first trip
    failed: tuple[str, ...] = ()


# -- drawing outcomes ----------------------------------------------------------------------


def binomial(rng: random.Random, n: int, p: float) -> int:
    """Successes in n Bernoulli(p) trials, by geometric skips: O(n min(p, 1-p) + 1)."""
    if p <= 0.0 or n == 0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:
        return n - binomial(rng, n, 1.0 - p)
    log_q, count, i = math.log1p(-p), 0, 0
    while True:
        i += int(math.log(1.0 - rng.random()) / log_q) + 1
        if i > n:
            return count
        count += 1


class _Arm:
    """Cumulative counts of one arm, plus error counts per look for trailing windows."""

    def __init__(self, model: ArmModel) -> None:
        self.model = model
        self.cdf = model.latency_cdf()
        self.requests = self.errors = self.converted = self.paid = 0
        self.buckets = [0] * N_LATENCY_BUCKETS
        self.error_prefix = [0]

    def draw(self, rng: random.Random, k: int) -> None:
        m, cdf, buckets = self.model, self.cdf, self.buckets
        self.requests += k
        self.errors += binomial(rng, k, m.error_rate)
        self.converted += binomial(rng, k, m.conversion)
        self.paid += binomial(rng, k, m.payment_success)
        for _ in range(k):
            buckets[bisect_right(cdf, rng.random())] += 1
        self.error_prefix.append(self.errors)

    def cumulative(self) -> ArmStats:
        n = self.requests
        return ArmStats(requests=n, errors=self.errors, latency_buckets=tuple(self.buckets),
                        checkout_units=n, converted_units=self.converted, payment_attempts=n,
                        payment_successes=self.paid, rule_units=n)

    def trailing(self, looks: int, per_look: int) -> ArmStats:
        start = max(0, len(self.error_prefix) - 1 - looks)
        errors = self.error_prefix[-1] - self.error_prefix[start]
        return ArmStats(requests=(len(self.error_prefix) - 1 - start) * per_look, errors=errors)


# -- runs ----------------------------------------------------------------------------------


def run_once(scenario: Scenario, config: SimConfig, rng: random.Random) -> RunOutcome:
    """One monitoring period: look every `look_every` requests per arm until a trip."""
    core, legacy = _Arm(scenario.core), _Arm(scenario.legacy)
    k, spec = config.look_every, config.spec
    window_looks = {s: max(1, math.ceil(s * config.requests_per_second / k))
                    for s in spec.burn_window_seconds()}
    for _ in range(config.looks):
        core.draw(rng, k)
        legacy.draw(rng, k)
        burn = {s: FunnelWindow("sim", core.trailing(m, k), legacy.trailing(m, k), s)
                for s, m in window_looks.items()}
        judgement = judge_funnel(spec, FunnelWindow("sim", core.cumulative(),
                                                    legacy.cumulative()), burn, None)
        if judgement.trips:
            failed = tuple(r.name for r in judgement.results
                           if r.verdict is Verdict.FAIL and r.name in BUSINESS)
            return RunOutcome(core.requests, failed)
    return RunOutcome(None)


def _run_chunk(scenario: Scenario, config: SimConfig, seed: int, runs: range) -> list[RunOutcome]:
    return [run_once(scenario, config, random.Random(f"{seed}:{scenario.name}:{i}"))
            for i in runs]


def run_many(
    scenario: Scenario, config: SimConfig, runs: int, seed: int, workers: int = 1
) -> list[RunOutcome]:
    """`runs` independent runs; run i has its own seed, so results do not depend on workers."""
    if workers <= 1:
        return _run_chunk(scenario, config, seed, range(runs))
    size = max(1, math.ceil(runs / (workers * 4)))
    chunks = [range(i, min(i + size, runs)) for i in range(0, runs, size)]
    with ProcessPoolExecutor(workers) as pool:
        parts = pool.map(_run_chunk, *zip(*((scenario, config, seed, c) for c in chunks),
                                            strict=True))
        return [outcome for part in parts for outcome in part]


# -- summaries -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Summary:
    scenario: Scenario
    runs: int
    trips: int
    rate_low: float
    rate_high: float  # 95% Clopper-Pearson interval of the trip rate
    median: float | None  # requests per arm until the trip, over the runs that tripped
    p90: float | None
    caught_by: tuple[tuple[str, int], ...]

    @property
    def rate(self) -> float:
        return self.trips / self.runs if self.runs else 0.0


def summarize(scenario: Scenario, outcomes: Sequence[RunOutcome]) -> Summary:
    at = sorted(o.tripped_at for o in outcomes if o.tripped_at is not None)
    ci = clopper_pearson(len(at), len(outcomes))
    by = Counter(name for o in outcomes for name in o.failed)
    return Summary(scenario, len(outcomes), len(at), ci.lower, ci.upper,
                   statistics.median(at) if at else None, _quantile(at, 0.9),
                   tuple(by.most_common()))


def _quantile(sorted_values: Sequence[int], q: float) -> float | None:
    """The smallest value with at least a fraction q of the values at or below it."""
    if not sorted_values:
        return None
    return float(sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)])


@dataclass(frozen=True, slots=True)
class SrmSummary:
    runs: int
    aa_alarms: int  # configured 50/50, routed 50/50
    skewed_share: float
    detected: int
    median_units: float | None


def simulate_srm(
    runs: int, units: int, look_every: int, spec: GuardrailsSpec, skewed_share: float,
    seed: int,
) -> SrmSummary:
    """The sample-ratio check alone, configured 50/50: false alarms when units really split
    50/50, and detection of a skewed split. `units` and `look_every` count both arms."""
    rng = random.Random(f"{seed}:srm")
    cfg = spec.sample_ratio or SampleRatioSpec()

    def first_alarm(share: float) -> int | None:
        core = 0
        for n in range(look_every, units + 1, look_every):
            core += binomial(rng, look_every, share)
            result = judge_sample_ratio(cfg, ArmStats(rule_units=core),
                                        ArmStats(rule_units=n - core), 0.5, spec.min_samples)
            if result.verdict is Verdict.FAIL:
                return n
        return None

    aa = sum(first_alarm(0.5) is not None for _ in range(runs))
    hits = [t for t in (first_alarm(skewed_share) for _ in range(runs)) if t is not None]
    return SrmSummary(runs, aa, skewed_share, len(hits),
                      statistics.median(hits) if hits else None)


# -- deploys and outages of the core -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outage:
    """The core refuses connections during each gap (start, end) in seconds; every request
    routed to it then fails over to legacy, and the customer is served."""

    name: str
    gaps: tuple[tuple[float, float], ...]
    expect_trip: bool


ROLLING_RESTART = Outage(  # four instances one after another, and a second deploy later
    "rolling restart (6 gaps of 2-3 s)",
    ((60, 62.5), (66, 69), (73, 75.5), (80, 83), (300, 303), (307, 309.5)), False)
CORE_DOWN = Outage("core down for 60 s", ((120, 180),), True)
OUTAGES = (ROLLING_RESTART, CORE_DOWN)


@dataclass(frozen=True, slots=True)
class OutageRun:
    outage: Outage
    rate: float
    failed_over: int
    longest_unreachable: float  # seconds, as the judge measured it
    tripped_at: float | None  # seconds from the start


def simulate_outage(outage: Outage, rate: float, seconds: float = 600.0,
                    spec: GuardrailsSpec | None = None, bucket_seconds: int = 10,
                    tick_seconds: float = 5.0) -> OutageRun:
    """Requests at `rate` per second through the proxy's telemetry recorder into memory
    telemetry, on a fake clock, judged every `tick_seconds` as the monitor does (the error
    budget's burn windows and the core's reachability). The core is otherwise healthy."""
    from control.decision import Backend, Reason
    from guardrails.judge import judge_error_budget
    from guardrails.telemetry import MemoryTelemetry, TelemetryRecorder
    from proxy.outcome import RequestOutcome

    cfg = (spec or GuardrailsSpec()).error_budget
    assert cfg is not None, "the error budget is switched off"
    t0 = 1_800_000_000.0
    clock = [t0]
    telemetry = MemoryTelemetry(bucket_seconds)
    recorder = TelemetryRecorder(bucket_seconds, clock=lambda: clock[0])

    def outcome(backend: str, reason: Reason, status: int, error: str | None) -> RequestOutcome:
        return RequestOutcome("f", "IE", "u", Backend(backend), reason, "GET", "/carts/x",
                              status, 0.02, error, ())

    served = outcome("core", Reason.RULE, 200, None)
    failover = (outcome("core", Reason.FAILOVER, 503, "connect"),
                outcome("legacy", Reason.FAILOVER, 200, None))
    failed_over, longest, next_tick, t = 0, 0.0, tick_seconds, 0.0
    windows = sorted({x for w in cfg.windows for x in (w.long, w.short)})
    while t < seconds:
        t += 1.0 / rate
        clock[0] = t0 + t
        down = any(a <= t < b for a, b in outage.gaps)
        failed_over += down
        for o in failover if down else (served,):
            recorder.observe(o)
        if t >= next_tick:
            next_tick += tick_seconds
            telemetry.add(recorder.drain())
            now = clock[0]
            burn = {w: telemetry.window("f", now - w, now) for w in windows}
            horizon = cfg.unreachable_grace + 3 * bucket_seconds
            reach = telemetry.reach("f", now - horizon, now)
            longest = max(longest, reach.unreachable_for(now)[0])
            if judge_error_budget(cfg, burn, reach, now).verdict is Verdict.FAIL:
                return OutageRun(outage, rate, failed_over, longest, t)
    return OutageRun(outage, rate, failed_over, longest, None)


def format_outages(runs: Sequence[OutageRun], grace: float) -> str:
    columns = (f"{'scenario':<36} {'req/s':>6} {'failed over':>12} {'longest down':>13} "
               f"{'tripped at':>11}")
    lines = [f"error budget with failovers (unreachable_grace {grace:g} s)", columns]
    for r in runs:
        tripped = "-" if r.tripped_at is None else f"{r.tripped_at:.0f} s"
        lines.append(f"{r.outage.name:<36} {r.rate:>6g} {r.failed_over:>12} "
                     f"{r.longest_unreachable:>11.0f} s {tripped:>11}")
    return "\n".join(lines)


# -- the command ---------------------------------------------------------------------------


def format_table(config: SimConfig, summaries: Sequence[Summary], srm: SrmSummary | None) -> str:
    header = (f"{config.samples} requests per arm per run, judged every {config.look_every} "
              f"({config.looks} looks), {config.requests_per_second:g} requests/s per arm, "
              f"alpha {config.spec.alpha:g}, min_samples {config.spec.min_samples}")
    columns = (f"{'scenario':<28} {'runs':>5} {'trips':>6} {'rate':>7} {'95% CI':>14} "
               f"{'median':>7} {'p90':>7}  caught by")
    lines = [header, "", columns]
    for s in summaries:
        caught = ", ".join(f"{name} {count}" for name, count in s.caught_by) or "-"
        ci = f"{s.rate_low:.2%}-{s.rate_high:.2%}"
        lines.append(f"{s.scenario.name:<28} {s.runs:>5} {s.trips:>6} {s.rate:>7.2%} {ci:>14} "
                     f"{_n(s.median):>7} {_n(s.p90):>7}  {caught}")
    if srm is not None:
        skew = f"{srm.skewed_share:.0%}/{1 - srm.skewed_share:.0%}"
        lines += ["", (f"sample ratio, configured 50/50, {srm.runs} runs each: "
                       f"{srm.aa_alarms} false alarms at 50/50; {skew} detected in "
                       f"{srm.detected}, median {_n(srm.median_units)} units")]
    return "\n".join(lines)


def _n(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m guardrails.simulate",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=1000, help="A/A runs")
    p.add_argument("--detect-runs", type=int, default=200, help="runs per regression")
    p.add_argument("--samples", type=int, default=20_000, help="requests per arm per run")
    p.add_argument("--look-every", type=int, default=25, help="requests per arm between looks")
    p.add_argument("--rps", type=float, default=2.0, help="requests/s per arm (burn windows)")
    p.add_argument("--alpha", type=float, default=0.01, help="false-trip budget")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = SimConfig(args.samples, args.look_every, args.rps, GuardrailsSpec(alpha=args.alpha))
    started = time.perf_counter()
    summaries = [summarize(AA, run_many(AA, config, args.runs, args.seed, args.workers))]
    summaries += [summarize(s, run_many(s, config, args.detect_runs, args.seed, args.workers))
                  for s in (AT_LIMITS, *REGRESSIONS)]
    srm = simulate_srm(args.detect_runs, 2 * config.samples, 2 * config.look_every,
                       config.spec, 0.45, args.seed)
    print(format_table(config, summaries, srm))
    runs = [simulate_outage(o, rate, spec=config.spec) for o in OUTAGES for rate in (2, 10)]
    assert config.spec.error_budget is not None
    print("\n" + format_outages(runs, config.spec.error_budget.unreachable_grace))
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
