"""Pure statistics of the guardrails: always-valid confidence sequences and tests.

Everything here may be re-evaluated after every new observation, forever, without
inflating the error rate: the bounds are *time-uniform* (confidence sequences), not
fixed-horizon intervals.

The workhorse is the conjugate mixture martingale of a Bernoulli sequence (Robbins 1970,
"Statistical methods related to the law of the iterated logarithm"; Lai 1976, "On confidence
sequences"; Howard, Ramdas, McAuliffe, Sekhon 2021, "Time-uniform, nonparametric,
nonasymptotic confidence sequences", Ann. Statist. 49(2), sec. 3 and Prop. 6): for any
prior Beta(a, b),

    M_n(p) = integral of theta^S (1-theta)^F dBeta(theta; a, b) / (p^S (1-p)^F)
           = B(a+S, b+F) / B(a, b) / (p^S (1-p)^F),        S successes, F failures,

is a nonnegative martingale with M_0 = 1 when p is the true mean. By Ville's inequality,
P(exists n: M_n(p) >= 1/alpha) <= alpha, so {p : M_n(p) < 1/alpha} is a (1-alpha)
confidence sequence, valid at every n simultaneously and at data-dependent stopping times.
The same M_n is the Bayes factor of the sequential sample-ratio test (Lindon and Malek
2020, "Anytime-valid inference for multinomial count data", the Dirichlet-multinomial
mSPRT with two categories).

Quantiles come from the same sequence: at the true q-quantile x_q of a latency, the
indicators 1{X > x_q} are Bernoulli with mean <= 1-q, and the empirical survival is
monotone in x, so one confidence sequence bounds the quantile at every histogram edge at
once (Howard and Ramdas 2022, "Sequential estimation of quantiles with applications to
A/B-testing and best-arm identification", Bernoulli 28(3), sec. 2).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate

from guardrails.model import LATENCY_BOUNDS_MS

JEFFREYS = (0.5, 0.5)  # Beta prior of the mixture: scale-free, good for rare and common rates
SRM_CONCENTRATION = 100.0  # Beta(k p0, k (1-p0)) prior of the sample-ratio test


@dataclass(frozen=True, slots=True)
class Interval:
    lower: float
    upper: float


def log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0 else x * math.log(y)


def log_mixture_bf(
    successes: float, n: float, p: float, prior: tuple[float, float] = JEFFREYS
) -> float:
    """log M_n(p): the beta-binomial mixture martingale (Bayes factor against mean `p`)."""
    a, b = prior
    failures = n - successes
    mixture = log_beta(a + successes, b + failures) - log_beta(a, b)
    return mixture - _xlogy(successes, p) - _xlogy(failures, 1.0 - p)


def _lower_root(s: float, f: float, target: float) -> float:
    """Smallest p with s log p + f log(1-p) = target (below the maximum at s/(s+f)).

    Newton's method in u = log p, where the log-likelihood is concave: started below the
    root it climbs monotonically, so stopping early can only make the bound looser.
    """
    if s == 0:
        return 0.0
    if f == 0:
        return math.exp(target / s)
    n = s + f
    p_hat = s / n
    peak = s * math.log(p_hat) + f * math.log1p(-p_hat)
    p = p_hat - 2.0 * math.sqrt(2.0 * p_hat * (1.0 - p_hat) * (peak - target) / n)
    u = math.log(p) if p > 0 else math.log(p_hat) - 1.0
    while s * u + f * math.log(-math.expm1(u)) >= target:
        u -= 1.0
    for _ in range(100):
        rest = -math.expm1(u)  # 1 - p
        step = (target - s * u - f * math.log(rest)) / (s - f * (1.0 - rest) / rest)
        u += step
        if step < 1e-10:
            break
    return math.exp(u)


def bernoulli_cs(
    successes: int, n: int, alpha: float, prior: tuple[float, float] = JEFFREYS
) -> Interval:
    """(1-alpha) confidence sequence for a Bernoulli mean: {p : M_n(p) < 1/alpha}.

    Either side alone is a one-sided (1-alpha) sequence too (it is a superset of the
    event the other side could add). Reference: Howard et al. 2021, Prop. 6 (beta-binomial
    mixture); Robbins 1970. With n = 0 it is [0, 1].
    """
    if n <= 0:
        return Interval(0.0, 1.0)
    failures = n - successes
    a, b = prior
    target = log_beta(a + successes, b + failures) - log_beta(a, b) + math.log(alpha)
    lower = _lower_root(successes, failures, target)
    upper = 1.0 - _lower_root(failures, successes, target)
    return Interval(lower, upper)


def difference_bounds(core: Interval, legacy: Interval) -> Interval:
    """Bounds on core - legacy from each arm's sequence (union bound: levels add up)."""
    return Interval(core.lower - legacy.upper, core.upper - legacy.lower)


def relative_drop_bounds(core: Interval, legacy: Interval) -> Interval:
    """Bounds on 1 - core/legacy from each arm's sequence (union bound; -inf when unknown)."""
    lower = 1.0 - core.upper / legacy.lower if legacy.lower > 0 else -math.inf
    upper = 1.0 - core.lower / legacy.upper if legacy.upper > 0 else -math.inf
    return Interval(lower, upper)


# -- quantiles of a latency histogram -------------------------------------------------------


def survival_counts(buckets: Sequence[int]) -> tuple[int, ...]:
    """Observations above each histogram edge of `LATENCY_BOUNDS_MS`."""
    return tuple(accumulate(buckets[:0:-1]))[::-1]


def value_at_survival(buckets: Sequence[int], count: float) -> float:
    """The latency (ms) with `count` observations above it, interpolated linearly inside
    its bucket (as Prometheus' histogram_quantile); inf inside the open last bucket."""
    return _value_at(survival_counts(buckets), sum(buckets), count)


def _value_at(above: Sequence[int], n: int, count: float) -> float:
    if count >= n:
        return 0.0
    i = bisect_left([-a for a in above], -count)  # first edge with at most `count` above
    if i == len(above):
        return math.inf
    hi_edge, hi_above = LATENCY_BOUNDS_MS[i], above[i]
    lo_edge, lo_above = (0.0, n) if i == 0 else (LATENCY_BOUNDS_MS[i - 1], above[i - 1])
    if lo_above == hi_above:
        return hi_edge
    return lo_edge + (hi_edge - lo_edge) * (lo_above - count) / (lo_above - hi_above)


def histogram_quantile(buckets: Sequence[int], q: float) -> float | None:
    """Interpolated q-quantile (ms) of a latency histogram; None when it is empty."""
    n = sum(buckets)
    return value_at_survival(buckets, (1.0 - q) * n) if n else None


@lru_cache(maxsize=16384)
def tail_count_thresholds(n: int, tail: float, alpha: float) -> tuple[float, float]:
    """Counts (lo, hi) such that c observations above x out of n show, at level alpha,
    P(X > x) < tail when c < lo, and P(X > x) > tail when c > hi (-inf / inf: never).

    They are the crossings of log M_n(tail) = log(1/alpha) on each side of n * tail.
    """
    log_level = -math.log(alpha)

    def excess(c: float) -> float:
        return log_mixture_bf(c, n, tail) - log_level

    mid = tail * n
    lo = -math.inf if excess(0.0) < 0 else _bisect(excess, 0.0, mid)
    hi = math.inf if excess(float(n)) < 0 else _bisect(excess, float(n), mid)
    return lo, hi


def _bisect(fn: Callable[[float], float], inside: float, outside: float) -> float:
    """The point between `inside` (fn >= 0) and `outside` (fn < 0) where fn crosses 0."""
    for _ in range(60):
        mid = 0.5 * (inside + outside)
        if fn(mid) >= 0:
            inside = mid
        else:
            outside = mid
    return inside


@dataclass(frozen=True, slots=True)
class QuantileBounds:
    """Time-uniform bounds on the q-quantile of a latency histogram (ms).

    `lower_edge` < quantile <= `upper_edge` hold exactly (on histogram edges; 0 / inf when
    not yet shown); `lower` / `upper` interpolate inside buckets like the estimate does.
    """

    n: int
    estimate: float | None
    lower_edge: float
    upper_edge: float
    lower: float
    upper: float


def quantile_bounds(buckets: Sequence[int], q: float, alpha: float) -> QuantileBounds:
    """Confidence sequence for the q-quantile from the indicators 1{X > x} (Howard and
    Ramdas 2022, sec. 2): P(X > x) > 1-q is shown for every edge x below the quantile."""
    n = sum(buckets)
    tail = 1.0 - q
    if n == 0:
        return QuantileBounds(0, None, 0.0, math.inf, 0.0, math.inf)
    below, above = tail_count_thresholds(n, tail, alpha)
    counts = survival_counts(buckets)
    shown_above = [i for i, c in enumerate(counts) if c > above]
    shown_below = [i for i, c in enumerate(counts) if c < below]
    return QuantileBounds(
        n=n,
        estimate=_value_at(counts, n, tail * n),
        lower_edge=LATENCY_BOUNDS_MS[shown_above[-1]] if shown_above else 0.0,
        upper_edge=LATENCY_BOUNDS_MS[shown_below[0]] if shown_below else math.inf,
        lower=_value_at(counts, n, above) if above < n else 0.0,
        upper=_value_at(counts, n, below) if below > 0 else math.inf,
    )


def first_edge_at_or_above(ms: float) -> int | None:
    """Index of the smallest histogram edge >= `ms`; None above the last edge."""
    i = bisect_left(LATENCY_BOUNDS_MS, ms)
    return i if i < len(LATENCY_BOUNDS_MS) else None


# -- sample ratio ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SampleRatioTest:
    share: float  # observed core share
    log_bayes_factor: float
    p_value: float  # always-valid: min(1, 1 / Bayes factor)
    share_bounds: Interval


def sample_ratio_test(
    core: int, legacy: int, expected_share: float, level: float
) -> SampleRatioTest:
    """Sequential sample-ratio-mismatch test (Lindon and Malek 2020, two categories):
    Bayes factor of a Beta(k p0, k (1-p0)) mixture against the configured share p0."""
    prior = (SRM_CONCENTRATION * expected_share, SRM_CONCENTRATION * (1.0 - expected_share))
    n = core + legacy
    log_bf = log_mixture_bf(core, n, expected_share, prior)
    return SampleRatioTest(
        share=core / n if n else math.nan,
        log_bayes_factor=log_bf,
        p_value=1.0 if log_bf <= 0 else math.exp(-log_bf),
        share_bounds=bernoulli_cs(core, n, level, prior),
    )


# -- fixed-sample intervals, to report simulation results --------------------------------------


def _binomial_cdf(k: int, n: int, p: float) -> float:
    if p <= 0:
        return 1.0
    if p >= 1:
        return 1.0 if k >= n else 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    lg_n = math.lgamma(n + 1)
    return min(1.0, sum(
        math.exp(lg_n - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * log_p
                 + (n - j) * log_q)
        for j in range(k + 1)
    ))


def clopper_pearson(k: int, n: int, level: float = 0.95) -> Interval:
    """Exact two-sided binomial interval for k successes out of n (Clopper and Pearson 1934)."""
    half = (1.0 - level) / 2.0
    lower = 0.0 if k == 0 else _bisect(lambda p: half - (1 - _binomial_cdf(k - 1, n, p)),
                                       0.0, 1.0)
    upper = 1.0 if k == n else _bisect(lambda p: _binomial_cdf(k, n, p) - half, 0.0, 1.0)
    return Interval(lower, upper)
