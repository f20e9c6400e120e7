"""The fault switch: what a fault drill injects into a running core, changed without a restart.

`Faults` is the whole setting: latency with jitter and injected errors (applied to the
contract routes by `checkout_core.web.faults`), the payment decline rate (the gateway's own,
through its `DeclineDial`), an unavailable window (503 with Retry-After, the in-process
stand-in for a restarting core) and a pricing drift (a known pricing error in one country,
read by the services at each pricing: `domain.pricing.PricingDrift`). `FaultSwitch` holds
the faults in force, replaced whole, and draws from one random source. It is used from the
event loop only, so it takes no lock.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from typing import Protocol

from checkout_core.domain.pricing import PricingDrift

Clock = Callable[[], float]
"""Monotonic seconds."""


@dataclasses.dataclass(frozen=True, slots=True)
class Faults:
    """What the core injects; all zero is a healthy core."""

    latency_ms: int = 0
    latency_jitter_ms: int = 0
    error_rate: float = 0.0
    decline_rate: float = 0.0
    unavailable_for_s: float = 0.0
    """Set: how long from now the core is unavailable. Read: how long it still is."""
    pricing_drift: PricingDrift | None = None


class DeclineDial(Protocol):
    """The share of payments a gateway declines, settable at runtime (the fake gateway)."""

    decline_rate: float


class FaultSwitch:
    def __init__(
        self,
        faults: Faults,
        dial: DeclineDial,
        rng: random.Random | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._dial = dial
        self._rng = rng or random.Random()
        self._clock = clock
        self._faults = faults
        self._unavailable_until = 0.0
        self.replace(faults)

    def current(self) -> Faults:
        """The faults in force; `unavailable_for_s` is what is left of the window."""
        left = round(self.unavailable_for(), 3)
        return dataclasses.replace(self._faults, decline_rate=self._dial.decline_rate,
                                   unavailable_for_s=left)

    def replace(self, faults: Faults) -> Faults:
        """Put `faults` in force, all of them at once; the window starts now."""
        self._faults = faults
        self._dial.decline_rate = faults.decline_rate
        self._unavailable_until = self._clock() + faults.unavailable_for_s
        return self.current()

    def unavailable_for(self) -> float:
        """Seconds left of the unavailable window; 0 when the core is available."""
        return max(0.0, self._unavailable_until - self._clock())

    def delay_seconds(self) -> float:
        """The latency to add to one request: the least, plus up to the jitter at random."""
        jitter_ms = self._faults.latency_jitter_ms
        jitter = self._rng.uniform(0, jitter_ms) if jitter_ms else 0.0
        return (self._faults.latency_ms + jitter) / 1000

    def pricing_drift(self) -> PricingDrift | None:
        """The pricing drift in force, if any."""
        return self._faults.pricing_drift

    def should_fail(self) -> bool:
        """Whether to answer one request with an injected error (drawn at `error_rate`)."""
        rate = self._faults.error_rate
        return rate > 0 and self._rng.random() < rate
