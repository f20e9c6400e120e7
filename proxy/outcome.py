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


class OutcomeObserver(Protocol):
    def observe(self, outcome: RequestOutcome) -> None: ...
