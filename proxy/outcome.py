"""What happened to one proxied request, for metrics and guardrails."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from control.decision import Backend, Reason


@dataclass(slots=True)  # built per request: not frozen, whose __init__ costs 1 us more
class RequestOutcome:
    funnel: str
    country: str
    unit: str
    backend: Backend
    reason: Reason
    method: str
    path: str
    status: int
    duration: float  # seconds, until the last body byte was sent
    upstream_error: str | None  # connect, timeout, reset, ... or None
    signals: tuple[str, ...]
    rule: str | None = None  # the rule that decided (RULE, and a FAILOVER of one)
    rules_version: str | None = None  # the rules version in force ("none": no rules)
    attempt: str | None = None
    """Identifies a payment attempt (its path and Idempotency-Key) on an outcome with
    signals: a retry or replay with the same key is the same attempt."""

    @property
    def failed_over(self) -> bool:
        """The core's half of a failover: the core could not be reached and legacy served
        the request. Not a request the core served, nor an error a customer saw."""
        return self.reason is Reason.FAILOVER and self.backend is Backend.CORE


class OutcomeObserver(Protocol):
    def observe(self, outcome: RequestOutcome) -> None: ...
