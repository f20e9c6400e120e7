from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, replace
from itertools import pairwise

import pytest

from guardrails.judge import (
    BUSINESS,
    FunnelJudgement,
    GuardrailResult,
    comparison_alpha,
    judge_funnel,
)
from guardrails.model import (
    LATENCY_BOUNDS_MS,
    N_LATENCY_BUCKETS,
    ArmStats,
    FunnelWindow,
    Verdict,
)
from guardrails.simulate import ArmModel
from guardrails.spec import GuardrailsSpec

SPEC = GuardrailsSpec()
P, F, I = Verdict.PASS, Verdict.FAIL, Verdict.INSUFFICIENT


def latency(n: int, median_ms: float = 120.0, sigma: float = 0.5) -> tuple[int, ...]:
    """A histogram holding n lognormal latencies in their expected proportions."""
    cdf = (0.0, *ArmModel(latency_median_ms=median_ms, latency_sigma=sigma).latency_cdf(), 1.0)
    counts = [round(n * (b - a)) for a, b in pairwise(cdf)]
    counts[counts.index(max(counts))] += n - sum(counts)
    assert len(counts) == N_LATENCY_BUCKETS
    return tuple(counts)


def arm(n: int, *, conversion: float = 0.30, payment: float = 0.95, errors: float = 0.001,
        median_ms: float = 120.0, units: int | None = None) -> ArmStats:
    """An arm of n requests, each a checkout unit and a payment attempt, at exact rates."""
    return ArmStats(
        requests=n, errors=round(n * errors), latency_buckets=latency(n, median_ms),
        checkout_units=n, converted_units=round(n * conversion), payment_attempts=n,
        payment_successes=round(n * payment), rule_units=n if units is None else units,
    )


def burn(core_errors: Mapping[float, float], n: int = 1000,
         spec: GuardrailsSpec = SPEC) -> dict[float, FunnelWindow]:
    """Trailing windows where the core has the given error rate (default 0.1%)."""
    return {s: FunnelWindow("f", ArmStats(requests=n, errors=round(n * core_errors.get(s, 0.001))),
                            ArmStats(requests=n, errors=1), s)
            for s in spec.burn_window_seconds()}


def judge(core: ArmStats, legacy: ArmStats, *, spec: GuardrailsSpec = SPEC,
          windows: Mapping[float, FunnelWindow] | None = None,
          share: float | None = 0.5) -> FunnelJudgement:
    return judge_funnel(spec, FunnelWindow("f", core, legacy),
                        burn({}, spec=spec) if windows is None else windows, share)


def verdicts(j: FunnelJudgement) -> dict[str, Verdict]:
    return {r.name: r.verdict for r in j.results}


def test_a_healthy_core_passes_every_guardrail() -> None:
    j = judge(arm(60_000), arm(60_000))
    assert verdicts(j) == {"conversion": P, "payment_success": P, "latency_p95": P,
                           "error_budget": P, "sample_ratio": P}
    assert j.verdict is P and not j.trips and not j.sample_ratio_mismatch


@pytest.mark.parametrize(("core", "failing"), [
    ({"conversion": 0.20}, "conversion"),
    ({"payment": 0.80}, "payment_success"),
    ({"payment": 0.78}, "payment_success"),
    ({"median_ms": 360.0}, "latency_p95"),
])
def test_a_clear_regression_fails_its_guardrail_and_trips(
    core: dict[str, float], failing: str
) -> None:
    j = judge(arm(5000, **core), arm(5000))  # type: ignore[arg-type]
    assert {name for name, v in verdicts(j).items() if v is F} == {failing}
    assert j.verdict is F and j.trips


def test_a_burning_error_budget_fails_and_trips() -> None:
    j = judge(arm(5000, errors=0.05), arm(5000), windows=burn(dict.fromkeys(
        SPEC.burn_window_seconds(), 0.05)))
    result = j.result("error_budget")
    assert result is not None and result.verdict is F
    assert result.threshold == 6.0 and result.bound == pytest.approx(10.0)
    assert j.trips


@pytest.mark.parametrize(("core", "legacy", "reason", "threshold"), [
    # a 2-point drop is allowed, but 78% is under the 80% floor
    (arm(20_000, payment=0.78), arm(20_000, payment=0.80), "floor", 0.80),
    (arm(5000, payment=0.80), arm(5000, payment=0.95), "drop", 0.05),
])
def test_payment_reports_the_criterion_that_failed(
    core: ArmStats, legacy: ArmStats, reason: str, threshold: float
) -> None:
    result = judge(core, legacy).result("payment_success")
    assert result is not None and result.verdict is F
    assert result.threshold == threshold
    assert result.bound is not None
    assert (result.bound < threshold) if reason == "floor" else (result.bound > threshold)


def test_latency_over_the_ceiling_fails_even_when_legacy_is_as_slow() -> None:
    spec = SPEC.model_copy(update={"latency_p95": SPEC.latency_p95.model_copy(  # type: ignore[union-attr]
        update={"ceiling_ms": 1000.0})})
    result = judge(arm(5000, median_ms=900), arm(5000, median_ms=900), spec=spec).result(
        "latency_p95")
    assert result is not None and result.verdict is F
    assert result.threshold == 1000.0
    assert result.evidence["ceiling_check"]["p_exceed_lower"] > 0.05


def test_latency_fail_evidence_shows_the_exceedance_bound() -> None:
    result = judge(arm(5000, median_ms=360), arm(5000)).result("latency_p95")
    assert result is not None and result.verdict is F
    check = result.evidence["ratio_check"]
    assert check["p_exceed_lower"] > 0.05
    assert check["edge_ms"] >= check["limit_ms"] == 1.5 * result.evidence["legacy"]["upper_edge_ms"]
    assert result.bound is not None and result.bound >= result.threshold == 1.5


# Legacy p95s at every position in a bucket: just above an edge (the worst case), inside
# it, just under the next edge; 273 ms is the simulation's, 505 ms was the worst case of the
# old 1-2-3-5-7 ladder (a 2.2x regression of it was never caught).
EDGE = LATENCY_BOUNDS_MS[30]
LEGACY_P95S = [EDGE * 1.01, EDGE * 1.1, EDGE * 1.19, 20.0, 273.0, 505.0, 2000.0]


@pytest.mark.parametrize("legacy_p95", LEGACY_P95S, ids=lambda ms: f"{ms:.1f}ms")
def test_latency_resolution_catches_any_p95_ratio_above_the_edge_spacing(
    legacy_p95: float,
) -> None:
    """With edges 1.2x apart, the ratio the failing side can miss is at most 1.2**4 (2.07x):
    legacy's bound is at most 1.2x its p95, and 1.5x that rounds up to at most 1.2**3 more.
    A 2.2x regression fails wherever legacy's p95 falls; a 1.5x one, at the limit, never."""
    median = legacy_p95 / math.exp(1.6448536269514722 * 0.5)
    slow = judge(arm(20_000, median_ms=2.2 * median), arm(20_000, median_ms=median))
    assert verdicts(slow)["latency_p95"] is F
    at_limit = judge(arm(50_000, median_ms=1.5 * median), arm(50_000, median_ms=median))
    assert verdicts(at_limit)["latency_p95"] is not F


@pytest.mark.parametrize("n", [0, 1, 50, 99])
def test_below_min_samples_everything_is_insufficient_however_bad(n: int) -> None:
    awful = ArmStats(requests=n, errors=n, latency_buckets=(0,) * (N_LATENCY_BUCKETS - 1) + (n,),
                     checkout_units=n, converted_units=0, payment_attempts=n,
                     payment_successes=0, rule_units=n)
    j = judge(awful, arm(n), windows={}, share=0.5)
    assert set(verdicts(j).values()) == {I}
    assert j.verdict is I and not j.trips


@pytest.mark.parametrize("core", [
    arm(300, conversion=0.25), arm(300, payment=0.90), arm(300, median_ms=200), arm(300),
])
def test_unclear_evidence_is_insufficient_and_never_trips(core: ArmStats) -> None:
    j = judge(core, arm(300))
    assert F not in verdicts(j).values()
    assert I in verdicts(j).values()
    assert j.verdict is I and not j.trips


H, M = 3600.0, 300.0  # the 1h / 5m alert at 14.4x (7.2% errors with a 99.5% SLO)


@pytest.mark.parametrize(("rates", "n", "expected"), [
    ({H: 0.10, M: 0.10}, 1000, F),
    ({H: 0.10, M: 0.001}, 1000, P),  # long window burning, the short one has recovered
    ({H: 0.001, M: 0.10}, 1000, P),  # a short spike only
    ({H: 0.10, M: 0.10}, 99, I),  # too few requests in the windows
])
def test_burn_rate_alerts_need_both_windows(
    rates: dict[float, float], n: int, expected: Verdict
) -> None:
    result = judge(arm(5000), arm(5000), windows=burn(rates, n=n)).result("error_budget")
    assert result is not None and result.verdict is expected


def test_a_missing_window_is_insufficient_not_a_failure() -> None:
    windows = burn(dict.fromkeys(SPEC.burn_window_seconds(), 0.5))
    del windows[M], windows[1800.0]
    j = judge(arm(5000), arm(5000), windows=windows)
    result = j.result("error_budget")
    assert result is not None and result.verdict is I and not j.trips
    assert all(a["verdict"] == "insufficient_data" for a in result.evidence["alerts"])


@pytest.mark.parametrize(("core_units", "legacy_units", "share", "expected"), [
    (6000, 4000, 0.5, F),
    (5000, 5000, 0.5, P),
    (1000, 9000, 0.1, P),
    (30, 70, 0.5, I),  # fewer than min_samples expected in the smaller arm
    (10, 10, 0.0, I),  # nothing to compare against
])
def test_sample_ratio_check(
    core_units: int, legacy_units: int, share: float, expected: Verdict
) -> None:
    j = judge(arm(5000, units=core_units), arm(5000, units=legacy_units), share=share)
    result = j.result("sample_ratio")
    assert result is not None and result.verdict is expected


def test_a_sample_ratio_mismatch_fails_the_funnel_but_does_not_trip() -> None:
    j = judge(arm(60_000, units=6000), arm(60_000, units=4000))
    assert verdicts(j)["sample_ratio"] is F
    assert {v for name, v in verdicts(j).items() if name in BUSINESS} == {P}
    assert j.verdict is F and j.sample_ratio_mismatch and not j.trips


def test_without_a_configured_share_there_is_no_sample_ratio_check() -> None:
    assert judge(arm(5000), arm(5000), share=None).result("sample_ratio") is None


def test_disabled_guardrails_are_left_out_and_the_rest_share_alpha() -> None:
    spec = GuardrailsSpec(conversion=None, latency_p95=None, sample_ratio=None)
    j = judge(arm(60_000), arm(60_000), spec=spec)
    assert [r.name for r in j.results] == ["payment_success", "error_budget"]
    assert comparison_alpha(spec) == spec.alpha
    assert comparison_alpha(SPEC) == pytest.approx(SPEC.alpha / 3)
    assert j.verdict is P


@pytest.mark.parametrize(("core", "legacy", "share"), [
    (arm(60_000), arm(60_000), 0.5),
    (arm(5000, conversion=0.2, payment=0.7, median_ms=4000, errors=0.2, units=9000), arm(5000),
     0.5),
    (arm(0), arm(0), 0.5),
    (replace(arm(500), latency_buckets=(0,) * (N_LATENCY_BUCKETS - 1) + (500,)), arm(500), 0.3),
])
def test_evidence_is_json(core: ArmStats, legacy: ArmStats, share: float) -> None:
    windows = burn(dict.fromkeys(SPEC.burn_window_seconds(), core.errors / max(1, core.requests)))
    j = judge(core, legacy, windows=windows, share=share)
    for result in j.results:
        text = json.dumps(asdict(result), allow_nan=False)
        assert json.loads(text)["verdict"] == result.verdict.value
        assert result.threshold is not None
        assert result.detail


def test_results_carry_counts_estimates_bounds_and_thresholds() -> None:
    result = judge(arm(5000, conversion=0.2), arm(4000)).result("conversion")
    assert isinstance(result, GuardrailResult)
    assert (result.n_core, result.n_legacy) == (5000, 4000)
    assert (result.core_estimate, result.legacy_estimate) == pytest.approx((0.2, 0.3))
    assert result.threshold == 0.10
    assert result.bound == pytest.approx(result.evidence["relative_drop"]["lower"])
    for side in ("core", "legacy"):
        ev = result.evidence[side]
        assert ev["lower"] < ev["rate"] < ev["upper"]
