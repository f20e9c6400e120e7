"""Bounded exponential backoff with full jitter (pure: the random source is injected)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    max_attempts: int
    base_seconds: float
    max_seconds: float

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before attempt `attempt` (1-based retries; attempt 0 never waits).

        Full jitter: uniform in [0, min(max, base * 2**(attempt-1))].
        """
        if attempt <= 0:
            return 0.0
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1))
        return rng.uniform(0.0, ceiling)
