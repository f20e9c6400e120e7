from __future__ import annotations

import math
import random
from itertools import pairwise

import pytest

from guardrails.model import LATENCY_BOUNDS_MS, N_LATENCY_BUCKETS, latency_bucket
from guardrails.stats import (
    Interval,
    bernoulli_cs,
    clopper_pearson,
    difference_bounds,
    first_edge_at_or_above,
    histogram_quantile,
    log_mixture_bf,
    quantile_bounds,
    relative_drop_bounds,
    sample_ratio_test,
    survival_counts,
    value_at_survival,
)


def hist(counts: dict[float, int]) -> tuple[int, ...]:
    """A histogram from {latency ms: count}, each latency in the bucket that holds it
    (math.inf: the open last bucket)."""
    buckets = [0] * N_LATENCY_BUCKETS
    for ms, count in counts.items():
        buckets[latency_bucket(ms)] += count
    return tuple(buckets)


def upper_edge(ms: float) -> float:
    """The upper edge of the bucket holding a latency of `ms`."""
    return LATENCY_BOUNDS_MS[latency_bucket(ms)]


def lower_edge(ms: float) -> float:
    """The lower edge of the bucket holding a latency of `ms` (0 for the first bucket)."""
    i = latency_bucket(ms)
    return LATENCY_BOUNDS_MS[i - 1] if i else 0.0


def inside(ms: float, fraction: float) -> float:
    """The latency `fraction` of the way through the bucket holding `ms`."""
    return lower_edge(ms) + fraction * (upper_edge(ms) - lower_edge(ms))


# -- Bernoulli confidence sequences ---------------------------------------------------------


@pytest.mark.parametrize(("successes", "n", "alpha"), [
    (50, 100, 0.05), (1, 1000, 0.01), (999, 1000, 0.01), (3, 7, 0.1), (300, 1000, 0.001),
    (9500, 10_000, 0.002),
])
def test_cs_bounds_are_where_the_mixture_martingale_reaches_one_over_alpha(
    successes: int, n: int, alpha: float
) -> None:
    cs = bernoulli_cs(successes, n, alpha)
    assert 0 < cs.lower < successes / n < cs.upper < 1
    for p in (cs.lower, cs.upper):
        assert log_mixture_bf(successes, n, p) == pytest.approx(-math.log(alpha), abs=1e-6)
    inside = (cs.lower + successes / n) / 2
    assert log_mixture_bf(successes, n, inside) < -math.log(alpha)


@pytest.mark.parametrize(("successes", "n", "expected"), [
    (0, 0, (0.0, 1.0)),
    (0, 100, (0.0, None)),
    (100, 100, (None, 1.0)),
])
def test_cs_edges(successes: int, n: int, expected: tuple[float | None, float | None]) -> None:
    cs = bernoulli_cs(successes, n, 0.05)
    lower, upper = expected
    assert lower is None or cs.lower == lower
    assert upper is None or cs.upper == upper
    assert 0.0 <= cs.lower <= cs.upper <= 1.0


def test_cs_narrows_with_data_and_widens_with_confidence() -> None:
    widths = [bernoulli_cs(n // 10, n, 0.01) for n in (100, 1000, 10_000, 100_000)]
    assert all(a.upper - a.lower > b.upper - b.lower for a, b in pairwise(widths))
    assert bernoulli_cs(30, 100, 0.001).lower < bernoulli_cs(30, 100, 0.05).lower


@pytest.mark.parametrize("p", [0.02, 0.3, 0.95])
def test_cs_is_time_uniform(p: float) -> None:
    """At alpha 0.05 the sequence misses the true mean at ANY of 500 times in <= 5% of runs."""
    rng, runs, misses = random.Random(7), 200, 0
    for _ in range(runs):
        successes = 0
        for n in range(1, 501):
            successes += rng.random() < p
            cs = bernoulli_cs(successes, n, 0.05)
            if not cs.lower <= p <= cs.upper:
                misses += 1
                break
    assert misses <= 0.05 * runs


@pytest.mark.parametrize(("core", "legacy", "difference", "drop"), [
    (Interval(0.2, 0.3), Interval(0.4, 0.5), (-0.3, -0.1), (0.25, 0.6)),
    (Interval(0.5, 0.5), Interval(0.5, 0.5), (0.0, 0.0), (0.0, 0.0)),
    (Interval(0.1, 0.2), Interval(0.0, 0.5), (-0.4, 0.2), (-math.inf, 0.8)),
])
def test_two_arm_bounds_combine_each_arms_bounds(
    core: Interval, legacy: Interval, difference: tuple[float, float], drop: tuple[float, float]
) -> None:
    d = difference_bounds(core, legacy)
    r = relative_drop_bounds(core, legacy)
    assert (d.lower, d.upper) == pytest.approx(difference)
    assert (r.lower, r.upper) == pytest.approx(drop)


# -- latency histograms -------------------------------------------------------------------


def test_histogram_edges_are_a_constant_ratio_apart() -> None:
    """1 ms to past 30 s, each edge 1.2x the previous one (to the rounding of the edges), so
    an edge bound on a quantile is within 20% of it, wherever it falls."""
    assert LATENCY_BOUNDS_MS[0] == 1.0
    assert LATENCY_BOUNDS_MS[-1] >= 30_000
    assert N_LATENCY_BUCKETS == len(LATENCY_BOUNDS_MS) + 1
    assert all(b / a == pytest.approx(1.2, abs=1e-3) for a, b in pairwise(LATENCY_BOUNDS_MS))


@pytest.mark.parametrize("ms", [0.0, 0.5, 1.0, 1.1, 100.0, *LATENCY_BOUNDS_MS[10:13], 30_000.0])
def test_latency_bucket_is_the_first_edge_at_or_above(ms: float) -> None:
    i = latency_bucket(ms)
    assert ms <= LATENCY_BOUNDS_MS[i]
    assert i == 0 or LATENCY_BOUNDS_MS[i - 1] < ms


def test_latencies_past_the_last_edge_go_to_the_open_bucket() -> None:
    last = N_LATENCY_BUCKETS - 1
    assert latency_bucket(LATENCY_BOUNDS_MS[-1] + 0.001) == latency_bucket(math.inf) == last


def test_survival_counts_count_observations_above_each_edge() -> None:
    latencies = {1.0: 1, 1.1: 2, 5.0: 5, 30_000.0: 3, math.inf: 1}  # 1.1 ms: second bucket
    above = survival_counts(hist(latencies))
    assert len(above) == len(LATENCY_BOUNDS_MS)
    assert above == tuple(sum(c for ms, c in latencies.items() if ms > edge)
                          for edge in LATENCY_BOUNDS_MS)
    five = latency_bucket(5.0)
    assert (above[0], above[1], above[five - 1], above[five]) == (11, 9, 9, 4)
    assert above[-1] == 1


@pytest.mark.parametrize(("buckets", "count", "ms"), [
    (hist({100: 10}), 10, 0.0),  # everything above: below every observation
    (hist({100: 10}), 5, inside(100, 0.5)),  # halfway through the bucket holding 100 ms
    (hist({100: 10}), 0, upper_edge(100)),
    (hist({10: 5, 100: 5}), 5, upper_edge(10)),
    (hist({10: 5, 100: 5}), 2.5, inside(100, 0.5)),
    (hist({100: 9, math.inf: 1}), 0.5, math.inf),  # inside the open last bucket
    (hist({100: 9, math.inf: 1}), 1, upper_edge(100)),  # the lowest latency with 1 above
])
def test_value_at_survival_interpolates_inside_a_bucket(
    buckets: tuple[int, ...], count: float, ms: float
) -> None:
    assert value_at_survival(buckets, count) == pytest.approx(ms)


@pytest.mark.parametrize(("buckets", "q", "ms"), [
    (hist({100: 100}), 0.5, inside(100, 0.5)),
    (hist({10: 95, 1000: 5}), 0.95, upper_edge(10)),
    (hist({10: 90, 1000: 10}), 0.95, inside(1000, 0.5)),
    (tuple([0] * N_LATENCY_BUCKETS), 0.95, None),
])
def test_histogram_quantile(buckets: tuple[int, ...], q: float, ms: float | None) -> None:
    assert histogram_quantile(buckets, q) == (ms if ms is None else pytest.approx(ms))


@pytest.mark.parametrize("ms", [0.5, 1, 1.1, LATENCY_BOUNDS_MS[1], 450, LATENCY_BOUNDS_MS[-1],
                                LATENCY_BOUNDS_MS[-1] + 0.001, 1e9])
def test_first_edge_at_or_above(ms: float) -> None:
    expected = next((i for i, edge in enumerate(LATENCY_BOUNDS_MS) if edge >= ms), None)
    assert first_edge_at_or_above(ms) == expected
    if ms == LATENCY_BOUNDS_MS[-1]:
        assert expected == len(LATENCY_BOUNDS_MS) - 1  # an edge is its own first edge
    if ms > LATENCY_BOUNDS_MS[-1]:
        assert expected is None


def lognormal_hist(rng: random.Random, n: int, median: float, sigma: float) -> list[int]:
    buckets = [0] * N_LATENCY_BUCKETS
    for _ in range(n):
        buckets[latency_bucket(rng.lognormvariate(math.log(median), sigma))] += 1
    return buckets


def test_quantile_bounds_bracket_the_estimate() -> None:
    q = quantile_bounds(lognormal_hist(random.Random(3), 5000, 120, 0.5), 0.95, 0.01)
    true_p95 = 120 * math.exp(1.6449 * 0.5)
    assert q.lower_edge <= q.lower <= q.estimate <= q.upper <= q.upper_edge
    assert q.lower_edge < true_p95 <= q.upper_edge
    assert q.estimate == pytest.approx(true_p95, rel=0.1)


def test_quantile_bounds_without_data_are_unbounded() -> None:
    q = quantile_bounds([0] * N_LATENCY_BUCKETS, 0.95, 0.01)
    assert (q.estimate, q.lower_edge, q.upper_edge) == (None, 0.0, math.inf)


def test_quantile_edge_bounds_are_time_uniform() -> None:
    """lower_edge < p95 <= upper_edge at every look, in >= 95% of runs at alpha 0.05."""
    rng, runs, misses = random.Random(11), 100, 0
    median, sigma = 200.0, 0.8
    true_p95 = median * math.exp(1.6448536 * sigma)
    for _ in range(runs):
        buckets = [0] * N_LATENCY_BUCKETS
        for look in range(50):
            for _ in range(20):
                buckets[latency_bucket(rng.lognormvariate(math.log(median), sigma))] += 1
            q = quantile_bounds(buckets, 0.95, 0.05)
            if not q.lower_edge < true_p95 <= q.upper_edge:
                misses += 1
                break
    assert misses <= 0.05 * runs


# -- sample ratio ---------------------------------------------------------------------------


@pytest.mark.parametrize(("core", "legacy", "share", "mismatch"), [
    (600, 400, 0.5, True),
    (500, 500, 0.5, False),
    (60, 40, 0.5, False),  # same split, too little data to tell
    (100, 900, 0.1, False),
    (200, 800, 0.1, True),
    (0, 500, 0.1, True),
])
def test_sample_ratio_test(core: int, legacy: int, share: float, mismatch: bool) -> None:
    test = sample_ratio_test(core, legacy, share, 0.001)
    assert (test.p_value <= 0.001) is mismatch
    assert (not test.share_bounds.lower <= share <= test.share_bounds.upper) is mismatch
    assert test.share == pytest.approx(core / (core + legacy))


# -- fixed-sample intervals for the simulation report ----------------------------------------


@pytest.mark.parametrize(("k", "n", "lower", "upper"), [
    (0, 1000, 0.0, 0.003682),  # 1 - 0.025 ** (1 / 1000)
    (10, 1000, 0.004806, 0.018313),
    (5, 10, 0.187086, 0.812914),
    (200, 200, 0.981725, 1.0),
])
def test_clopper_pearson(k: int, n: int, lower: float, upper: float) -> None:
    ci = clopper_pearson(k, n)
    assert (ci.lower, ci.upper) == pytest.approx((lower, upper), abs=2e-6)
