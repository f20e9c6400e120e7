"""The shadow parity gate of staged rollouts (issue 17): a rollout started with
`--require-parity` waits before its first step until shadow parity meets the bar over enough
compared units, then proceeds; parity falling under the bar pauses it, and a person may
resume it as any pause."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from control import rollout
from control.rollout import Command, Rollout, State, new_rollout, step
from control.rollout_driver import MAX_SHADOW_SUMMARY_AGE, RolloutDriver
from control.store import ControlStore
from control.store.sqlite_store import SqliteControlStore
from shadow.report import ParityGate, parity_gate, store_summary

BAR = 99.9
MIN_UNITS = 200
T0 = 1000.0


def summary(compared: int, with_mismatch: int, funnel: str = "hardware") -> dict[str, object]:
    """A shadow summary as `shadow.report.summarize` shapes it (units only); `store_summary`
    adds when it was written."""
    return {"window_seconds": 86400.0, "alpha": 0.05,
            "funnels": {funnel: {"units": {"compared": compared, "with_mismatch": with_mismatch,
                                           "parity": None, "parity_interval": None},
                                 "dropped": {}, "comparisons": compared, "mismatches": 0,
                                 "routes": {}}}}


def gate(compared: int, with_mismatch: int) -> ParityGate:
    return parity_gate(summary(compared, with_mismatch), "hardware", BAR, MIN_UNITS)


def gated(hold: float = 60) -> Rollout:
    return new_rollout("hardware", None, [Decimal(1), Decimal(5), Decimal(25)], hold,
                       reason="r", actor="a", now=T0, parity_bar=BAR,
                       parity_min_units=MIN_UNITS, before_percent=Decimal(0))


def started(hold: float = 60) -> Rollout:
    """A gated rollout whose gate was met at T0: at its first step."""
    result = step(gated(hold), "insufficient_data", False, T0, parity=gate(1000, 0))
    assert result.apply_percent == Decimal(1)
    return result.rollout


def test_a_gated_rollout_starts_before_its_first_step_at_the_current_percentage() -> None:
    r = new_rollout("hardware", "IE", [Decimal(5), Decimal(25)], 60, reason="r", actor="a",
                    parity_bar=BAR, parity_min_units=MIN_UNITS, before_percent=Decimal("0.5"))
    assert (r.state, r.step_index, r.percent) == (State.WAITING, -1, Decimal("0.5"))
    assert "waiting for shadow parity of at least 99.9% over 200 compared units" in r.detail


@pytest.mark.parametrize(("compared", "bad", "detail"), [
    (125, 1, "waiting for shadow parity: 99.2% over 125 of 200 units, need 99.9%"),
    (250, 2, "waiting for shadow parity: 99.2% over 250 units, need 99.9%"),
    (1000, 2, "waiting for shadow parity: 99.8% over 1000 units, need 99.9%"),
    (0, 0, "waiting for shadow parity: no units compared yet (0 of 200), need 99.9%"),
    (150, 0, "waiting for shadow parity: 100% over 150 of 200 units, need 99.9%"),
])
def test_the_gate_waits_at_zero_and_says_for_what(compared: int, bad: int,
                                                  detail: str) -> None:
    result = step(gated(), "pass", False, T0 + 3600, parity=gate(compared, bad))
    assert result.apply_percent is None
    assert (result.rollout.state, result.rollout.step_index) == (State.WAITING, -1)
    assert result.rollout.percent == Decimal(0)
    assert result.rollout.detail == detail


def test_without_a_recent_shadow_report_the_gate_waits() -> None:
    result = step(gated(), "pass", False, T0 + 10, parity=None)
    assert (result.rollout.state, result.apply_percent) == (State.WAITING, None)
    assert "no recent shadow report of hardware" in result.rollout.detail


def test_a_parity_shown_is_rounded_down_never_up_to_the_bar() -> None:
    """9989/10000 is 99.89%: shown as 99.9% it would seem to meet the bar it misses."""
    result = step(gated(), "pass", False, T0, parity=gate(10_000, 11))
    assert "99.89% over 10000 units, need 99.9%" in result.rollout.detail


def test_the_wait_goes_on_without_a_history_entry_per_tick() -> None:
    first = step(gated(), "pass", False, T0 + 5, parity=gate(100, 0)).rollout
    again = step(first, "pass", False, T0 + 10, parity=gate(100, 0)).rollout
    assert again == first
    more = step(again, "pass", False, T0 + 15, parity=gate(120, 0)).rollout
    assert "120 of 200" in more.detail and more.history == first.history


def test_once_parity_meets_the_bar_the_first_step_is_applied_then_the_steps_go_on() -> None:
    result = step(gated(), "insufficient_data", False, T0 + 30, parity=gate(1000, 1))
    r = result.rollout
    assert result.apply_percent == Decimal(1)  # the guardrails need no data to start
    assert (r.state, r.step_index, r.step_started_at, r.parity_met) == (
        State.RUNNING, 0, T0 + 30, True)
    assert r.detail == "shadow parity 99.9% over 1000 units meets 99.9%: first step 1%"
    holding = step(r, "pass", False, T0 + 60, parity=gate(1000, 1))
    assert holding.apply_percent is None  # the first step holds like any other
    advanced = step(r, "pass", False, T0 + 91, parity=gate(1000, 1))
    assert advanced.apply_percent == Decimal(5)


def test_parity_falling_under_the_bar_pauses_the_rollout_with_the_reason() -> None:
    result = step(started(), "pass", False, T0 + 100, parity=gate(1000, 5))
    r = result.rollout
    assert (r.state, result.apply_percent, r.percent) == (State.PAUSED, None, Decimal(1))
    assert r.detail.startswith("shadow parity fell under the bar: 99.5% over 1000 units, "
                               "need 99.9%: paused")
    assert step(r, "pass", False, T0 + 200, parity=gate(1000, 0)).rollout == r  # stays


@pytest.mark.parametrize("parity", [None, gate(150, 5)], ids=["no-report", "too-few-units"])
def test_no_evidence_is_not_a_fall(parity: ParityGate | None) -> None:
    result = step(started(), "pass", False, T0 + 61, parity=parity)
    assert result.rollout.state is State.RUNNING and result.apply_percent == Decimal(5)


def test_a_person_resumes_a_parity_pause_and_the_same_low_figure_does_not_pause_again(
) -> None:
    paused = step(started(), "pass", False, T0 + 100, parity=gate(1000, 5)).rollout
    resumed = rollout.command(paused, Command.RESUME, T0 + 200)
    assert resumed.state is State.RUNNING
    assert "resumed under the shadow parity bar (99.9%)" in resumed.detail
    on = step(resumed, "pass", False, T0 + 261, parity=gate(1000, 5))
    assert on.rollout.state is State.RUNNING and on.apply_percent == Decimal(5)
    # parity recovers, then falls again: paused again
    met = step(on.rollout, "pass", False, T0 + 270, parity=gate(2000, 1)).rollout
    assert met.parity_met and met.state is State.RUNNING
    fell = step(met, "pass", False, T0 + 280, parity=gate(2000, 10)).rollout
    assert fell.state is State.PAUSED


def test_a_kill_switch_stops_a_rollout_waiting_at_its_gate() -> None:
    result = step(gated(), "pass", True, T0 + 5, parity=gate(1000, 0))
    assert (result.rollout.state, result.apply_percent) == (State.STOPPED, None)


def test_a_rollout_paused_at_its_gate_resumes_to_the_gate() -> None:
    paused = rollout.command(gated(), Command.PAUSE, T0 + 1)
    assert step(paused, "pass", False, T0 + 2, parity=gate(1000, 0)).apply_percent is None
    resumed = rollout.command(paused, Command.RESUME, T0 + 3)
    assert resumed.detail == "resumed" and resumed.step_index == -1
    assert step(resumed, "pass", False, T0 + 4, parity=gate(1000, 0)).apply_percent == (
        Decimal(1))


def test_a_rollout_without_a_bar_ignores_parity() -> None:
    plain = new_rollout("hardware", None, [Decimal(1), Decimal(5)], 0, reason="r",
                        actor="a", now=T0)
    result = step(plain, "pass", False, T0 + 1, parity=gate(1000, 500))
    assert result.apply_percent == Decimal(5)


@pytest.mark.parametrize(("bar", "units"), [(0, 200), (100.5, 200), (-1, 200), (99, 0)])
def test_bad_gates_are_refused(bar: float, units: int) -> None:
    with pytest.raises(ValueError):
        new_rollout("f", None, [Decimal(1)], 1, reason="r", actor="a", parity_bar=bar,
                    parity_min_units=units)


def test_a_gated_rollout_round_trips_and_an_older_record_still_loads(tmp_path: Path) -> None:
    store = SqliteControlStore(tmp_path / "c.sqlite3")
    r = gated()
    rollout.register(store, r)
    assert rollout.all_rollouts(store) == [r]
    old = json.loads(r.to_json())
    for name in ("parity_bar", "parity_min_units", "parity_met", "before_percent"):
        del old[name]
    old["step_index"] = 0
    loaded = Rollout.from_json(json.dumps(old))
    assert loaded.parity_bar is None and loaded.percent == Decimal(1)
    store.close()


# -- the driver: reads the summary the proxy stores, applies the first step ------------------


class Ramps:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, Decimal, str]] = []

    def __call__(self, store: ControlStore, funnel: str, country: str | None,
                 percent: Decimal, *, actor: str, reason: str) -> object:
        self.calls.append((funnel, country, percent, actor))
        return None


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ControlStore]:
    s = SqliteControlStore(tmp_path / "c.sqlite3")
    yield s
    s.close()


def test_the_driver_waits_then_applies_the_first_step_when_the_stored_parity_meets_the_bar(
        store: ControlStore) -> None:
    ramps = Ramps()
    driver = RolloutDriver(store, frozenset, ramps)
    r = gated()
    rollout.register(store, r)
    [row] = driver.advance({"telemetry": "ok", "funnels": {}}, T0 + 5)  # no summary yet
    assert row["state"] == "waiting" and "no recent shadow report" in row["detail"]
    store_summary(store, summary(180, 0))
    now = time.time()
    [row] = driver.advance({"telemetry": "ok", "funnels": {}}, now)
    assert row == {"id": r.id, "funnel": "hardware", "state": State.WAITING, "percent": "0",
                   "detail": "waiting for shadow parity: 100% over 180 of 200 units, "
                             "need 99.9%"}
    assert rollout.load(store, r.id) is not None
    assert rollout.load(store, r.id).detail == row["detail"]  # type: ignore[union-attr]
    assert ramps.calls == []
    store_summary(store, summary(400, 0))
    [row] = driver.advance({"telemetry": "ok", "funnels": {}}, now + 5)
    assert ramps.calls == [("hardware", None, Decimal(1), f"rollout:{r.id}")]
    assert (row["state"], row["percent"]) == (State.RUNNING, "1")


def test_the_driver_takes_a_stale_summary_as_none(store: ControlStore) -> None:
    ramps = Ramps()
    rollout.register(store, gated())
    store_summary(store, summary(1000, 0))
    later = time.time() + MAX_SHADOW_SUMMARY_AGE + 1
    [row] = RolloutDriver(store, frozenset, ramps).advance({"funnels": {}}, later)
    assert ramps.calls == [] and "no recent shadow report" in row["detail"]


def test_the_driver_pauses_a_running_rollout_when_stored_parity_falls(
        store: ControlStore) -> None:
    ramps = Ramps()
    driver = RolloutDriver(store, frozenset, ramps)
    rollout.register(store, started())
    store_summary(store, summary(1000, 3))
    [row] = driver.advance({"telemetry": "ok", "funnels": {}}, time.time())
    assert row["state"] == State.PAUSED and "fell under the bar" in row["detail"]
    assert ramps.calls == []
