"""The `guardrails:` section of the rules file: pydantic models, validated once at load.

An empty section (`guardrails: {}`) is a sensible production configuration: every guardrail
is on with the defaults below. A funnel may carry its own `guardrails:` section; it is
merged over the top-level one section by section with `merge_guardrails` (a section the
funnel names replaces the default's whole section; `null` switches the guardrail off).

Durations are written as `30s`, `5m`, `1h`, `1d` (or a number of seconds) and held as
float seconds.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """Seconds in `30s`, `5m`, `1h`, `1d`, or a plain positive number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration like 30s, 5m, 1h, 1d")
    if not seconds > 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema({"anyOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(s|m|h|d)\s*$"},
    ], "description": "a duration: 30s, 5m, 1h, 1d, or seconds"}),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class ConversionSpec(Strict):
    """Units that started a checkout and placed an order: core may not drop by more than
    `max_relative_drop` of legacy's rate (0.10: 30% -> 27% is the limit)."""

    max_relative_drop: float = Field(0.10, gt=0, lt=1)


class PaymentSuccessSpec(Strict):
    """Payment attempts that succeeded: at most `max_absolute_drop` below legacy (0.05: 95%
    -> 90%), and never below `floor` (null: no floor)."""

    max_absolute_drop: float = Field(0.05, gt=0, lt=1)
    floor: float | None = Field(0.80, ge=0, lt=1)


class LatencyP95Spec(Strict):
    """p95 latency: at most `max_ratio` times legacy's, and at most `ceiling_ms` (null: none)."""

    max_ratio: float = Field(1.5, gt=1)
    ceiling_ms: float | None = Field(3000.0, gt=0)


class BurnWindowSpec(Strict):
    """One multi-window burn-rate alert: both windows must burn faster than `burn_rate`."""

    long: Duration
    short: Duration
    burn_rate: float = Field(gt=0)

    @model_validator(mode="after")
    def _short_inside_long(self) -> BurnWindowSpec:
        if self.short >= self.long:
            raise ValueError(f"short window ({self.short:g}s) must be shorter than long "
                             f"({self.long:g}s)")
        return self


def _default_windows() -> list[BurnWindowSpec]:
    return [
        BurnWindowSpec(long=3600.0, short=300.0, burn_rate=14.4),
        BurnWindowSpec(long=6 * 3600.0, short=1800.0, burn_rate=6.0),
    ]


class ErrorBudgetSpec(Strict):
    """An availability SLO for the core, alerting as in the Google SRE workbook (ch. 5,
    "Alerting on SLOs", multiwindow multi-burn-rate alerts). A window with fewer than
    `min_requests` core requests is not judged.

    Only errors a customer saw burn the budget. A request the core could not take (refused
    connection) that legacy then served is a failover: the customer was served, so a
    rolling restart of the core burns nothing. Failovers fail this guardrail only when the
    core stays unreachable for `unreachable_grace` (no request reached it meanwhile)."""

    slo: float = Field(0.995, gt=0, lt=1)
    windows: list[BurnWindowSpec] = Field(default_factory=_default_windows, min_length=1)
    min_requests: int = Field(100, ge=1)
    unreachable_grace: Duration = 30.0

    @model_validator(mode="after")
    def _reachable(self) -> ErrorBudgetSpec:
        for w in self.windows:
            if w.burn_rate * (1 - self.slo) >= 1:
                raise ValueError(
                    f"burn_rate {w.burn_rate:g} can never be reached with slo {self.slo:g}: "
                    "burn_rate x (1 - slo) must be below 1")
        return self

    @property
    def budget(self) -> float:
        return 1.0 - self.slo


class SampleRatioSpec(Strict):
    """Sequential sample-ratio-mismatch test of rule-routed units; trips nothing, it freezes
    rollouts. `p_value` is its always-valid false-alarm level."""

    p_value: float = Field(0.001, gt=0, lt=1)


class GuardrailsSpec(Strict):
    """Guardrails of one funnel (or the defaults of all funnels)."""

    alpha: float = Field(0.01, gt=0, lt=0.5)
    min_samples: int = Field(100, ge=1)
    conversion: ConversionSpec | None = Field(default_factory=ConversionSpec)
    payment_success: PaymentSuccessSpec | None = Field(default_factory=PaymentSuccessSpec)
    latency_p95: LatencyP95Spec | None = Field(default_factory=LatencyP95Spec)
    error_budget: ErrorBudgetSpec | None = Field(default_factory=ErrorBudgetSpec)
    sample_ratio: SampleRatioSpec | None = Field(default_factory=SampleRatioSpec)
    trip_scope: Literal["funnel", "global"] = "funnel"

    def burn_window_seconds(self) -> tuple[float, ...]:
        """Every window length (seconds) the error budget needs, long and short, sorted."""
        if self.error_budget is None:
            return ()
        lengths = {s for w in self.error_budget.windows for s in (w.long, w.short)}
        return tuple(sorted(lengths))


def merge_guardrails(defaults: GuardrailsSpec, override: GuardrailsSpec | None) -> GuardrailsSpec:
    """A funnel's guardrails: each field the funnel's section sets replaces the default's.

    Sections are replaced whole (`payment_success: {floor: 0.9}` keeps the model default for
    `max_absolute_drop`, not the top-level value); an explicit `null` switches one off.
    """
    if override is None:
        return defaults
    update = {name: getattr(override, name) for name in override.model_fields_set}
    return defaults.model_copy(update=update)
