"""The judge's operating characteristics, on a budget: A/A false trips and detection.

The figures of docs/guardrails.md come from `python -m guardrails.simulate` with
1,000 A/A runs; these seeded runs are smaller so that they stay fast, and their limits
leave room so that they are not flaky.
"""

from __future__ import annotations

import random
import statistics

import pytest

from guardrails.simulate import (
    AA,
    AT_LIMITS,
    REGRESSIONS,
    Scenario,
    SimConfig,
    binomial,
    main,
    run_many,
    simulate_srm,
    summarize,
)
from guardrails.spec import GuardrailsSpec


@pytest.mark.parametrize(("n", "p"), [(25, 0.001), (25, 0.3), (25, 0.95), (1000, 0.05),
                                      (10, 0.0), (10, 1.0)])
def test_binomial_sampler_has_the_right_mean(n: int, p: float) -> None:
    rng = random.Random(5)
    draws = [binomial(rng, n, p) for _ in range(4000)]
    assert all(0 <= d <= n for d in draws)
    assert statistics.fmean(draws) == pytest.approx(n * p, abs=max(0.02, 0.05 * n * p))


def test_aa_false_trip_rate_is_small_under_continuous_monitoring() -> None:
    """200 runs of 10,000 requests per arm, judged every 50 (200 looks): <= 3% trip."""
    config = SimConfig(samples=10_000, look_every=50)
    outcomes = run_many(AA, config, runs=200, seed=2024)
    assert summarize(AA, outcomes).rate <= 0.03


def test_every_comparison_at_its_limit_does_not_trip() -> None:
    config = SimConfig(samples=10_000, look_every=50)
    assert summarize(AT_LIMITS, run_many(AT_LIMITS, config, runs=50, seed=7)).rate <= 0.06


# Requests per arm within which 90% of runs catch each regression (docs/guardrails.md
# states the median and p90 of 200 runs; the limits here sit just above that p90).
DETECTION_WITHIN = {
    "payment_success": 1500,
    "error_budget": 200,
    "latency_p95": 1000,
    "conversion": 5000,
}


@pytest.mark.parametrize("scenario", REGRESSIONS, ids=lambda s: s.expected)
def test_a_clear_regression_is_caught_within_the_stated_samples(scenario: Scenario) -> None:
    assert scenario.expected is not None
    config = SimConfig(samples=DETECTION_WITHIN[scenario.expected])
    summary = summarize(scenario, run_many(scenario, config, runs=30, seed=99))
    assert summary.rate >= 0.9
    assert summary.caught_by[0][0] == scenario.expected


def test_sample_ratio_check_in_simulation() -> None:
    srm = simulate_srm(runs=50, units=10_000, look_every=50, spec=GuardrailsSpec(),
                       skewed_share=0.45, seed=3)
    assert srm.aa_alarms <= 2
    assert srm.detected >= 45


def test_the_command_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--runs", "3", "--detect-runs", "3", "--samples", "500", "--look-every", "50",
                 "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "A/A (core = legacy)" in out
    for scenario in REGRESSIONS:
        assert scenario.name in out
    assert "sample ratio" in out
