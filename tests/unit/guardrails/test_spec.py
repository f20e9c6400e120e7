from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from guardrails.spec import GuardrailsSpec, merge_guardrails, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("6h", 21600.0), ("1d", 86400.0),
    ("1.5h", 5400.0), (" 10s ", 10.0), (90, 90.0), (2.5, 2.5),
])
def test_durations_parse_to_seconds(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5", "5x", "-1s", "0s", "", "1h30m", "h", True, None, 0, -3])
def test_bad_durations_are_rejected(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_an_empty_section_is_a_production_config() -> None:
    spec = GuardrailsSpec.model_validate({})
    assert spec.alpha == 0.01
    assert spec.min_samples == 100
    assert spec.trip_scope == "funnel"
    assert spec.conversion is not None and spec.conversion.max_relative_drop == 0.10
    assert spec.payment_success is not None
    assert (spec.payment_success.max_absolute_drop, spec.payment_success.floor) == (0.05, 0.80)
    assert spec.latency_p95 is not None
    assert (spec.latency_p95.max_ratio, spec.latency_p95.ceiling_ms) == (1.5, 3000.0)
    assert spec.error_budget is not None and spec.error_budget.slo == 0.995
    assert [(w.long, w.short, w.burn_rate) for w in spec.error_budget.windows] == [
        (3600.0, 300.0, 14.4), (21600.0, 1800.0, 6.0)]
    assert spec.sample_ratio is not None and spec.sample_ratio.p_value == 0.001


def test_burn_window_seconds_lists_every_window_once_sorted() -> None:
    assert GuardrailsSpec().burn_window_seconds() == (300.0, 1800.0, 3600.0, 21600.0)
    assert GuardrailsSpec(error_budget=None).burn_window_seconds() == ()


def test_demo_windows_from_yaml() -> None:
    spec = GuardrailsSpec.model_validate(yaml.safe_load("""
        error_budget:
          slo: 0.99
          windows:
            - {long: 2m, short: 10s, burn_rate: 14.4}
            - {long: 10m, short: 1m, burn_rate: 6}
        trip_scope: global
    """))
    assert spec.burn_window_seconds() == (10.0, 60.0, 120.0, 600.0)
    assert spec.trip_scope == "global"


@pytest.mark.parametrize("section", [
    {"alpah": 0.01},
    {"conversion": {"max_relative_drop": 0.1, "extra": 1}},
    {"payment_success": {"flor": 0.8}},
    {"latency_p95": {"p95": 2}},
    {"error_budget": {"windows": [{"long": "1h", "short": "5m", "burn_rate": 14.4, "x": 1}]}},
    {"sample_ratio": {"alpha": 0.001}},
])
def test_unknown_keys_are_rejected(section: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        GuardrailsSpec.model_validate(section)


@pytest.mark.parametrize(("section", "message"), [
    ({"alpha": 0}, "greater than 0"),
    ({"alpha": 0.6}, "less than 0.5"),
    ({"min_samples": 0}, "greater than or equal to 1"),
    ({"latency_p95": {"max_ratio": 0.9}}, "greater than 1"),
    ({"trip_scope": "country"}, "'funnel' or 'global'"),
    ({"error_budget": {"windows": [{"long": "5m", "short": "1h", "burn_rate": 2}]}},
     "must be shorter"),
    ({"error_budget": {"slo": 0.9, "windows": [{"long": "1h", "short": "5m", "burn_rate": 14.4}]}},
     "can never be reached"),
    ({"error_budget": {"windows": []}}, "at least 1 item"),
])
def test_invalid_values_are_rejected(section: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        GuardrailsSpec.model_validate(section)


def test_the_spec_is_frozen() -> None:
    spec = GuardrailsSpec()
    with pytest.raises(ValidationError):
        spec.alpha = 0.5  # type: ignore[misc]


DEFAULTS = GuardrailsSpec.model_validate({
    "alpha": 0.02,
    "payment_success": {"max_absolute_drop": 0.03, "floor": 0.85},
    "latency_p95": {"max_ratio": 2.0},
})


@pytest.mark.parametrize(("override", "expected"), [
    # a section the funnel names replaces the default's whole section
    ({"payment_success": {"floor": 0.9}}, {"payment_success": (0.05, 0.9), "alpha": 0.02}),
    # sections the funnel does not name are the defaults' sections
    ({"alpha": 0.001}, {"payment_success": (0.03, 0.85), "alpha": 0.001}),
    # null switches a guardrail off
    ({"payment_success": None}, {"payment_success": None, "alpha": 0.02}),
    ({}, {"payment_success": (0.03, 0.85), "alpha": 0.02}),
])
def test_merge_replaces_sections_the_funnel_names(
    override: dict[str, object], expected: dict[str, object]
) -> None:
    merged = merge_guardrails(DEFAULTS, GuardrailsSpec.model_validate(override))
    pay = merged.payment_success
    got_pay = None if pay is None else (pay.max_absolute_drop, pay.floor)
    assert {"payment_success": got_pay, "alpha": merged.alpha} == expected
    assert merged.latency_p95 == DEFAULTS.latency_p95


def test_merge_without_override_is_the_defaults() -> None:
    assert merge_guardrails(DEFAULTS, None) is DEFAULTS
