"""The judge: one funnel's counts in, one verdict per guardrail out, with its evidence.

Pure and stateless: the monitor may call it after every tick, forever. The comparisons of
conversion, payment success and p95 latency use time-uniform confidence sequences
(`guardrails.stats`), so looking again and again does not inflate the false-trip
rate. The overall level `alpha` is split evenly over those enabled comparisons, and each
comparison's share evenly over its two arms (a union bound: the comparison can only be
wrong if one arm's sequence misses its true value). One-sided outcomes:

- FAIL: the bound shows the core is worse than the threshold;
- PASS: the bound shows it is not;
- INSUFFICIENT: neither yet, or fewer than `min_samples` per arm. It never trips.

The error budget is not a comparison but the SRE workbook's multiwindow, multi-burn-rate
alert on the core's own errors (those a customer saw), plus a core that stays unreachable
past a grace period while legacy serves its traffic. The sample-ratio check never trips the kill switch: its
FAIL asks the caller to freeze rollouts (`FunnelJudgement.sample_ratio_mismatch`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from guardrails.model import LATENCY_BOUNDS_MS, ArmStats, CoreReach, FunnelWindow, Verdict
from guardrails.spec import (
    BurnWindowSpec,
    ConversionSpec,
    ErrorBudgetSpec,
    GuardrailsSpec,
    LatencyP95Spec,
    PaymentSuccessSpec,
    SampleRatioSpec,
)
from guardrails.stats import (
    Interval,
    QuantileBounds,
    bernoulli_cs,
    first_edge_at_or_above,
    quantile_bounds,
    relative_drop_bounds,
    sample_ratio_test,
    survival_counts,
)

BUSINESS = ("conversion", "payment_success", "latency_p95", "error_budget")
LATENCY_QUANTILE = 0.95
LATENCY_TAIL = 1.0 - LATENCY_QUANTILE


@dataclass(frozen=True, slots=True)
class GuardrailResult:
    """One guardrail's verdict with its evidence (every value JSON-serialisable).

    `bound` is the confidence bound compared with `threshold` by the criterion that decided
    the verdict: on FAIL, the bound that crossed; otherwise the one that must stay within
    the threshold to PASS. `evidence` holds every count, estimate, bound and threshold.
    """

    name: str
    verdict: Verdict
    core_estimate: float | None
    legacy_estimate: float | None
    bound: float | None
    threshold: float | None
    n_core: int
    n_legacy: int
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FunnelJudgement:
    funnel: str
    verdict: Verdict
    results: tuple[GuardrailResult, ...]

    @property
    def trips(self) -> bool:
        """True when a business guardrail failed: the kill switch must be set."""
        return any(r.verdict is Verdict.FAIL and r.name in BUSINESS for r in self.results)

    @property
    def sample_ratio_mismatch(self) -> bool:
        """True when the observed split contradicts the configured one: freeze rollouts."""
        srm = self.result("sample_ratio")
        return srm is not None and srm.verdict is Verdict.FAIL

    def result(self, name: str) -> GuardrailResult | None:
        return next((r for r in self.results if r.name == name), None)


def judge_funnel(
    spec: GuardrailsSpec,
    cumulative: FunnelWindow,
    burn_windows: Mapping[float, FunnelWindow],
    configured_core_share: float | None,
    reach: CoreReach | None = None,
    now: float = 0.0,
) -> FunnelJudgement:
    """Judge one funnel.

    `cumulative` holds the counts since monitoring began (the always-valid comparisons and
    the sample-ratio check use it); `burn_windows` maps a window length in seconds to the
    counts of that trailing window (see `GuardrailsSpec.burn_window_seconds`); `reach`
    whether the core could be reached lately (as of `now`). The sample-ratio check runs
    only when `configured_core_share` is known.
    """
    core, legacy, n_min = cumulative.core, cumulative.legacy, spec.min_samples
    alpha = comparison_alpha(spec)
    results: list[GuardrailResult] = []
    if spec.conversion is not None:
        results.append(judge_conversion(spec.conversion, core, legacy, alpha, n_min))
    if spec.payment_success is not None:
        results.append(judge_payment(spec.payment_success, core, legacy, alpha, n_min))
    if spec.latency_p95 is not None:
        results.append(judge_latency(spec.latency_p95, core, legacy, alpha, n_min))
    if spec.error_budget is not None:
        results.append(judge_error_budget(spec.error_budget, burn_windows, reach, now))
    if spec.sample_ratio is not None and configured_core_share is not None:
        results.append(judge_sample_ratio(spec.sample_ratio, core, legacy,
                                          configured_core_share, n_min))
    return FunnelJudgement(cumulative.funnel, overall_verdict(results), tuple(results))


def overall_verdict(results: list[GuardrailResult]) -> Verdict:
    return combine(r.verdict for r in results)


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    """FAIL if any fails, PASS if all pass (or there are none), else INSUFFICIENT."""
    seen = set(verdicts)
    if Verdict.FAIL in seen:
        return Verdict.FAIL
    return Verdict.PASS if seen <= {Verdict.PASS} else Verdict.INSUFFICIENT


def comparison_alpha(spec: GuardrailsSpec) -> float:
    """Each enabled always-valid comparison's share of the false-trip budget."""
    enabled = [spec.conversion, spec.payment_success, spec.latency_p95]
    return spec.alpha / max(1, sum(s is not None for s in enabled))


# -- conversion and payment success: Bernoulli rates -----------------------------------------


def judge_conversion(
    cfg: ConversionSpec, core: ArmStats, legacy: ArmStats, alpha: float, min_samples: int
) -> GuardrailResult:
    """Units that placed an order among units that started a checkout; relative drop."""
    name, limit = "conversion", cfg.max_relative_drop
    nc, nl = core.checkout_units, legacy.checkout_units
    if min(nc, nl) < min_samples:
        return _too_few(name, nc, nl, min_samples, limit)
    cs_core = bernoulli_cs(min(core.converted_units, nc), nc, alpha / 2)
    cs_legacy = bernoulli_cs(min(legacy.converted_units, nl), nl, alpha / 2)
    drop = relative_drop_bounds(cs_core, cs_legacy)
    verdict = _verdict(fail=drop.lower > limit, ok=drop.upper <= limit)
    bound = drop.lower if verdict is Verdict.FAIL else drop.upper
    rc, rl = _rate(core.converted_units, nc), _rate(legacy.converted_units, nl)
    return GuardrailResult(
        name, verdict, rc, rl, _num(bound), limit, nc, nl,
        detail=(f"conversion core {rc:.2%} vs legacy {rl:.2%}; relative drop in "
                f"[{_pct(drop.lower)}, {_pct(drop.upper)}], allowed {limit:.1%}"),
        evidence={
            "method": "beta-binomial mixture confidence sequences, union bound over arms",
            "alpha": alpha, "core": _rate_evidence(core.converted_units, nc, cs_core),
            "legacy": _rate_evidence(legacy.converted_units, nl, cs_legacy),
            "relative_drop": _interval(drop), "max_relative_drop": limit,
        },
    )


def judge_payment(
    cfg: PaymentSuccessSpec, core: ArmStats, legacy: ArmStats, alpha: float, min_samples: int
) -> GuardrailResult:
    """Successful payment attempts; absolute drop against legacy, and a floor."""
    name, limit, floor = "payment_success", cfg.max_absolute_drop, cfg.floor
    nc, nl = core.payment_attempts, legacy.payment_attempts
    if min(nc, nl) < min_samples:
        return _too_few(name, nc, nl, min_samples, limit)
    cs_core = bernoulli_cs(min(core.payment_successes, nc), nc, alpha / 2)
    cs_legacy = bernoulli_cs(min(legacy.payment_successes, nl), nl, alpha / 2)
    drop = Interval(cs_legacy.lower - cs_core.upper, cs_legacy.upper - cs_core.lower)
    below_floor = floor is not None and cs_core.upper < floor
    above_floor = floor is None or cs_core.lower >= floor
    verdict = _verdict(fail=drop.lower > limit or below_floor,
                       ok=drop.upper <= limit and above_floor)
    by_floor = below_floor and not drop.lower > limit
    bound, threshold = ((cs_core.upper, floor) if by_floor
                        else (drop.lower if verdict is Verdict.FAIL else drop.upper, limit))
    rc, rl = _rate(core.payment_successes, nc), _rate(legacy.payment_successes, nl)
    return GuardrailResult(
        name, verdict, rc, rl, bound, threshold, nc, nl,
        detail=(f"payment success core {rc:.2%} in [{cs_core.lower:.2%}, {cs_core.upper:.2%}] "
                f"vs legacy {rl:.2%}; drop in [{drop.lower:+.2%}, {drop.upper:+.2%}], allowed "
                f"{limit:.1%}" + ("" if floor is None else f", floor {floor:.0%}")),
        evidence={
            "method": "beta-binomial mixture confidence sequences, union bound over arms",
            "alpha": alpha, "core": _rate_evidence(core.payment_successes, nc, cs_core),
            "legacy": _rate_evidence(legacy.payment_successes, nl, cs_legacy),
            "absolute_drop": _interval(drop), "max_absolute_drop": limit, "floor": floor,
        },
    )


# -- p95 latency ---------------------------------------------------------------------------


def judge_latency(
    cfg: LatencyP95Spec, core: ArmStats, legacy: ArmStats, alpha: float, min_samples: int
) -> GuardrailResult:
    """p95 against max_ratio x legacy's p95 and against the ceiling.

    FAIL when the always-valid lower bound of P(core latency > t) exceeds 5% at the first
    histogram edge t >= max_ratio x (legacy p95's upper bound), or t >= the ceiling: the
    core's p95 is then above it. Exact on histogram edges, so it trips a little later
    than the ratio says when the limit falls inside a bucket. PASS compares interpolated
    bounds (core p95 upper <= max_ratio x legacy p95 lower, and <= ceiling).
    """
    name = "latency_p95"
    qc = quantile_bounds(core.latency_buckets, LATENCY_QUANTILE, alpha / 2)
    ql = quantile_bounds(legacy.latency_buckets, LATENCY_QUANTILE, alpha / 2)
    if min(qc.n, ql.n) < min_samples:
        return _too_few(name, qc.n, ql.n, min_samples, cfg.max_ratio)
    ratio_check = _exceedance(core.latency_buckets, cfg.max_ratio * ql.upper_edge, alpha / 2)
    ceiling_check = (None if cfg.ceiling_ms is None
                     else _exceedance(core.latency_buckets, cfg.ceiling_ms, alpha / 2))
    ratio_fail = ratio_check is not None and ratio_check["p_exceed_lower"] > LATENCY_TAIL
    ceiling_fail = ceiling_check is not None and ceiling_check["p_exceed_lower"] > LATENCY_TAIL
    ok = (qc.upper <= cfg.max_ratio * ql.lower
          and (cfg.ceiling_ms is None or qc.upper <= cfg.ceiling_ms))
    verdict = _verdict(fail=ratio_fail or ceiling_fail, ok=ok)
    if ceiling_fail and not ratio_fail:
        bound, threshold = qc.lower_edge, cfg.ceiling_ms
    else:
        bound = (qc.lower_edge / ql.upper_edge if verdict is Verdict.FAIL
                 else (qc.upper / ql.lower if ql.lower > 0 else math.inf))
        threshold = cfg.max_ratio
    return GuardrailResult(
        name, verdict, _num(qc.estimate), _num(ql.estimate), _num(bound), threshold, qc.n, ql.n,
        detail=(f"p95 core {_ms(qc.estimate)} in ({_ms(qc.lower_edge)}, {_ms(qc.upper)}] vs "
                f"legacy {_ms(ql.estimate)} in ({_ms(ql.lower)}, {_ms(ql.upper_edge)}]; "
                f"limit {cfg.max_ratio:g}x legacy"
                + ("" if cfg.ceiling_ms is None else f", ceiling {_ms(cfg.ceiling_ms)}")),
        evidence={
            "method": "quantile confidence sequences on the histogram (Howard & Ramdas 2022)",
            "alpha": alpha, "core": _quantile_evidence(qc), "legacy": _quantile_evidence(ql),
            "max_ratio": cfg.max_ratio, "ceiling_ms": cfg.ceiling_ms,
            "ratio_check": ratio_check, "ceiling_check": ceiling_check,
        },
    )


def _exceedance(buckets: tuple[int, ...], ms: float, alpha: float) -> dict[str, Any] | None:
    """Lower bound of P(latency > t) at the first histogram edge t >= `ms` (None if none)."""
    i = first_edge_at_or_above(ms) if math.isfinite(ms) else None
    if i is None:
        return None
    n, above = sum(buckets), survival_counts(buckets)[i]
    return {"limit_ms": ms, "edge_ms": LATENCY_BOUNDS_MS[i], "n": n, "above": above,
            "p_exceed_lower": bernoulli_cs(above, n, alpha).lower}


def _quantile_evidence(q: QuantileBounds) -> dict[str, Any]:
    return {"n": q.n, "p95_ms": _num(q.estimate), "lower_edge_ms": _num(q.lower_edge),
            "upper_edge_ms": _num(q.upper_edge), "lower_ms": _num(q.lower),
            "upper_ms": _num(q.upper)}


# -- error budget: SRE multiwindow, multi-burn-rate alerts ---------------------------------


def judge_error_budget(
    cfg: ErrorBudgetSpec, burn_windows: Mapping[float, FunnelWindow],
    reach: CoreReach | None = None, now: float = 0.0,
) -> GuardrailResult:
    """FAIL when, for some alert, the core burns its budget faster than `burn_rate` in both
    the long and the short window (Google SRE workbook, ch. 5, alert #6), or when the core
    has been unreachable for `unreachable_grace` (`reach`, as of `now`). A window with too
    few core requests, or not supplied, leaves that alert INSUFFICIENT."""
    pairs = [_burn_pair(cfg, w, burn_windows) for w in cfg.windows]
    verdict = combine(Verdict(p["verdict"]) for p in pairs)
    decisive = max((p for p in pairs if p["verdict"] == verdict.value),
                   key=lambda p: p["slowest_burn"] / p["burn_rate"])
    core, legacy = decisive["core"]["long"], decisive["legacy"]["long"]
    details = [p["detail"] for p in pairs]
    evidence: dict[str, Any] = {
        "method": "SRE multiwindow multi-burn-rate alert", "slo": cfg.slo,
        "budget": cfg.budget, "min_requests": cfg.min_requests, "alerts": pairs}
    bound: float | None = decisive["slowest_burn"] if decisive["slowest_burn"] >= 0 else None
    threshold: float | None = decisive["burn_rate"]
    if reach is not None:
        seconds, failed_over = reach.unreachable_for(now)
        down = seconds >= cfg.unreachable_grace
        evidence["unreachable"] = {"seconds": round(seconds, 1), "requests": failed_over,
                                   "grace_seconds": cfg.unreachable_grace, "fail": down}
        if failed_over:
            details.append(f"core unreachable for at least {seconds:.0f} s "
                           f"({failed_over} requests failed over to legacy; grace "
                           f"{_dur(cfg.unreachable_grace)})")
        if down:
            verdict, bound, threshold = Verdict.FAIL, seconds, cfg.unreachable_grace
    return GuardrailResult(
        "error_budget", verdict, core.get("error_rate"), legacy.get("error_rate"),
        bound, threshold, core.get("requests", 0), legacy.get("requests", 0),
        detail="; ".join(details), evidence=evidence,
    )


def _burn_pair(
    cfg: ErrorBudgetSpec, w: BurnWindowSpec, burn_windows: Mapping[float, FunnelWindow]
) -> dict[str, Any]:
    long, short = burn_windows.get(w.long), burn_windows.get(w.short)
    label = f"{_dur(w.long)}/{_dur(w.short)} at {w.burn_rate:g}x"
    arms = {arm: {kind: _window_burn(win, arm, cfg.budget)
                  for kind, win in (("long", long), ("short", short))}
            for arm in ("core", "legacy")}
    core = arms["core"]
    judged = all(core[k].get("requests", 0) >= cfg.min_requests for k in ("long", "short"))
    slowest = min(core[k].get("burn", -1.0) for k in ("long", "short"))
    if not judged:
        verdict, text = Verdict.INSUFFICIENT, f"{label}: fewer than {cfg.min_requests} requests"
    else:
        verdict = Verdict.FAIL if slowest > w.burn_rate else Verdict.PASS
        text = (f"{label}: core burns {core['long']['burn']:.1f}x (long), "
                f"{core['short']['burn']:.1f}x (short)")
    return {"long_seconds": w.long, "short_seconds": w.short, "burn_rate": w.burn_rate,
            "verdict": verdict.value, "slowest_burn": slowest if judged else -1.0,
            "detail": text, **arms}


def _window_burn(window: FunnelWindow | None, arm: str, budget: float) -> dict[str, Any]:
    if window is None:
        return {"missing": True}
    stats: ArmStats = getattr(window, arm)
    if stats.requests == 0:
        return {"requests": 0, "errors": stats.errors}
    rate = min(stats.errors, stats.requests) / stats.requests
    return {"requests": stats.requests, "errors": stats.errors, "error_rate": rate,
            "burn": rate / budget}


# -- sample ratio --------------------------------------------------------------------------


def judge_sample_ratio(
    cfg: SampleRatioSpec, core: ArmStats, legacy: ArmStats, share: float, min_samples: int
) -> GuardrailResult:
    """Units routed by a rule to each arm against the configured core share (sequential
    Dirichlet-multinomial test, Lindon & Malek 2020). Judged once the smaller arm is
    expected to hold `min_samples` units; FAIL freezes rollouts, it never trips."""
    name, nc, nl = "sample_ratio", core.rule_units, legacy.rule_units
    if not 0.0 < share < 1.0:
        return _insufficient(name, nc, nl, f"configured core share {share:g}: nothing to test",
                             cfg.p_value, {"configured_core_share": share})
    if min(share, 1 - share) * (nc + nl) < min_samples:
        return _too_few(name, nc, nl, min_samples, cfg.p_value)
    test = sample_ratio_test(nc, nl, share, cfg.p_value)
    verdict = Verdict.FAIL if test.p_value <= cfg.p_value else Verdict.PASS
    return GuardrailResult(
        name, verdict, test.share, 1.0 - test.share, test.p_value, cfg.p_value, nc, nl,
        detail=(f"core share {test.share:.2%} in [{test.share_bounds.lower:.2%}, "
                f"{test.share_bounds.upper:.2%}] vs configured {share:.2%}; "
                f"always-valid p = {test.p_value:.3g}"),
        evidence={"method": "beta-binomial mixture Bayes factor (Lindon & Malek 2020)",
                  "configured_core_share": share, "observed_core_share": test.share,
                  "share_bounds": _interval(test.share_bounds),
                  "log_bayes_factor": test.log_bayes_factor, "p_value": test.p_value,
                  "max_p_value": cfg.p_value},
    )


# -- small helpers -------------------------------------------------------------------------


def _verdict(*, fail: bool, ok: bool) -> Verdict:
    return Verdict.FAIL if fail else Verdict.PASS if ok else Verdict.INSUFFICIENT


SAMPLE_UNIT = {"conversion": "units", "payment_success": "payment attempts",
               "latency_p95": "requests", "sample_ratio": "units"}


def lacks(name: str, nc: int, nl: int, need: int) -> str:
    """What a guardrail lacks for a verdict, e.g. 'core: 3 of 100 units'."""
    unit = SAMPLE_UNIT.get(name, "samples")
    short = [f"{arm}: {n} of {need} {unit}" for arm, n in (("core", nc), ("legacy", nl))
             if n < need]
    return "; ".join(short)


def _too_few(name: str, nc: int, nl: int, min_samples: int, threshold: float) -> GuardrailResult:
    return _insufficient(name, nc, nl, f"not enough data: {lacks(name, nc, nl, min_samples)}",
                         threshold, {"min_samples": min_samples})


def _insufficient(
    name: str, nc: int, nl: int, detail: str, threshold: float, evidence: dict[str, Any]
) -> GuardrailResult:
    return GuardrailResult(name, Verdict.INSUFFICIENT, None, None, None, threshold, nc, nl,
                           detail, evidence)


def _rate(successes: int, n: int) -> float:
    return min(successes, n) / n


def _rate_evidence(successes: int, n: int, cs: Interval) -> dict[str, Any]:
    return {"n": n, "successes": successes, "rate": min(successes, n) / n,
            "lower": cs.lower, "upper": cs.upper}


def _interval(i: Interval) -> dict[str, float | None]:
    return {"lower": _num(i.lower), "upper": _num(i.upper)}


def _num(x: float | None) -> float | None:
    """JSON has no infinities: an unbounded or unknown value is None."""
    return x if x is not None and math.isfinite(x) else None


def _pct(x: float) -> str:
    return f"{x:.1%}" if math.isfinite(x) else "unbounded"


def _ms(x: float | None) -> str:
    return f"{x:.0f} ms" if x is not None and math.isfinite(x) else "unbounded"


def _dur(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
