from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkout_core.retry import Backoff


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 0.0), (1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (30, 1.0)],
)
def test_delay_doubles_up_to_the_cap(attempt: int, ceiling: float) -> None:
    backoff = Backoff(max_attempts=10, base_seconds=0.1, max_seconds=1.0)

    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    assert backoff.delay(attempt, Top()) == pytest.approx(ceiling)


@given(attempt=st.integers(0, 100), seed=st.integers())
def test_delay_is_jittered_within_bounds(attempt: int, seed: int) -> None:
    delay = Backoff(5, 0.05, 2.0).delay(attempt, random.Random(seed))
    assert 0.0 <= delay <= 2.0
