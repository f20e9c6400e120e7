"""Time to a verdict: what an insufficient guardrail lacks and when it can have it."""

from __future__ import annotations

from decimal import Decimal

from control import rollout
from control.rollout_driver import waiting_on
from guardrails.judge import judge_conversion
from guardrails.model import ArmStats, FunnelWindow
from guardrails.spec import ConversionSpec
from guardrails.waiting import time_to_verdict


def conversion(core_units: int, legacy_units: int):  # type: ignore[no-untyped-def]
    spec = ConversionSpec(max_relative_drop=0.1)
    return judge_conversion(spec, ArmStats(checkout_units=core_units),
                            ArmStats(checkout_units=legacy_units), 0.05, 100)


def recent(core_units: int, legacy_units: int) -> FunnelWindow:
    return FunnelWindow("warranties", ArmStats(checkout_units=core_units),
                        ArmStats(checkout_units=legacy_units), seconds=300)


def test_the_judge_says_what_it_lacks_per_arm() -> None:
    result = conversion(3, 270)
    assert result.detail == "not enough data: core: 3 of 100 units"


def test_the_wait_comes_from_the_slowest_arm_at_the_recent_rate() -> None:
    wait = time_to_verdict(conversion(3, 27), recent(6, 60))  # 1.2 and 12 units a minute
    assert wait is not None
    assert wait["lacks"] == "core: 3 of 100 units; legacy: 27 of 100 units"
    assert wait["per_minute"] == {"core": 1.2, "legacy": 12.0}
    assert wait["eta_seconds"] == round(97 / 1.2 * 60, 1)
    assert wait["text"] == "about 81 min at 1.2 units/min (core, last 5 min)"


def test_no_recent_traffic_gives_no_estimate_and_says_why() -> None:
    wait = time_to_verdict(conversion(3, 270), recent(0, 50))
    assert wait is not None and wait["eta_seconds"] is None
    assert "no core units in the last 5 min" in wait["text"]


def test_a_judged_result_needs_no_wait() -> None:
    spec = ConversionSpec(max_relative_drop=0.1)
    arm = ArmStats(checkout_units=20_000, converted_units=12_000)
    judged = judge_conversion(spec, arm, arm, 0.05, 100)
    assert judged.verdict.value == "pass"
    assert time_to_verdict(judged, recent(10, 10)) is None


def test_a_waiting_rollout_says_on_what_and_adds_no_history_each_tick() -> None:
    report = {"telemetry": "ok", "funnels": {"warranties": {
        "trips": False, "verdict": "insufficient_data", "sample_ratio_mismatch": False,
        "guardrails": [{"name": "conversion", "verdict": "insufficient_data", "waiting": {
            "lacks": "core: 3 of 100 units", "text": "about 81 min at 1.2 units/min"}}]}}}
    why = waiting_on(report, "warranties")
    assert why == "conversion: core: 3 of 100 units, about 81 min at 1.2 units/min"
    r = rollout.new_rollout("warranties", None, [Decimal(1), Decimal(5)], 10, reason="x",
                            actor="y", now=0)
    waiting = rollout.step(r, "insufficient_data", False, 20, waiting_on=why).rollout
    assert waiting.state is rollout.State.WAITING and why in waiting.detail
    later = rollout.step(waiting, "insufficient_data", False, 30,
                         waiting_on=why.replace("81", "70")).rollout
    assert "70 min" in later.detail and len(later.history) == len(waiting.history)


def test_enough_samples_but_an_undecided_bound_says_so() -> None:
    spec = ConversionSpec(max_relative_drop=0.1)
    close = judge_conversion(spec, ArmStats(checkout_units=200, converted_units=108),
                             ArmStats(checkout_units=200, converted_units=114), 0.05, 100)
    assert close.verdict.value == "insufficient_data"
    wait = time_to_verdict(close, recent(10, 10))
    assert wait is not None and wait["lacks"] == "a narrower confidence bound"
    assert wait["eta_seconds"] is None and "bound" in wait["text"]


def test_the_rate_is_taken_over_the_window_given() -> None:
    wait = time_to_verdict(conversion(3, 270), FunnelWindow(
        "warranties", ArmStats(checkout_units=10), ArmStats(), seconds=30))
    assert wait is not None and wait["per_minute"]["core"] == 20.0
