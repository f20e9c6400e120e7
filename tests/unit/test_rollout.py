from __future__ import annotations

from decimal import Decimal

import pytest

from control import rollout
from control.rollout import Command, State, new_rollout, step
from control.store.sqlite_store import SqliteControlStore


def plan(hold: float = 60, now: float = 1000.0):
    return new_rollout("warranties", "IE", [Decimal(s) for s in ("1", "5", "25")], hold,
                       reason="r", actor="a", now=now)


@pytest.mark.parametrize(("elapsed", "verdict", "killed", "state", "percent", "applied"), [
    (10, "pass", False, State.RUNNING, "1", None),  # still holding
    (61, "pass", False, State.RUNNING, "5", Decimal(5)),  # held and passing: next step
    (61, "insufficient_data", False, State.WAITING, "1", None),  # never on too little data
    (61, None, False, State.WAITING, "1", None),  # no telemetry: waits
    (10, "fail", False, State.STOPPED, "1", None),  # a failure stops at once
    (10, "pass", True, State.STOPPED, "1", None),  # so does a kill switch
])
def test_one_tick(elapsed, verdict, killed, state, percent, applied):
    r = plan()
    result = step(r, verdict, killed, r.step_started_at + elapsed)
    assert (result.rollout.state, str(result.rollout.percent), result.apply_percent) == (
        state, percent, applied)


def test_a_rollout_walks_every_step_then_finishes():
    r, now, applied = plan(hold=10), 1000.0, []
    for _ in range(10):
        now += 11
        result = step(r, "pass", False, now)
        r = result.rollout
        if result.apply_percent is not None:
            applied.append(str(result.apply_percent))
    assert applied == ["5", "25"]
    assert r.state is State.DONE
    assert [h["state"] for h in r.history][-1] == "done"


def test_waiting_resumes_when_data_arrives():
    r = plan(hold=10)
    r = step(r, "insufficient_data", False, r.step_started_at + 11).rollout
    assert r.state is State.WAITING
    again = step(r, "insufficient_data", False, r.step_started_at + 12).rollout
    assert again == r  # no history spam while it waits
    assert step(r, "pass", False, r.step_started_at + 13).apply_percent == Decimal(5)


@pytest.mark.parametrize(("cmd", "state"), [(Command.PAUSE, State.PAUSED),
                                            (Command.ABORT, State.ABORTED)])
def test_people_pause_and_abort(cmd, state):
    r = rollout.command(plan(), cmd, 1001)
    assert r.state is state
    assert step(r, "pass", False, 5000).apply_percent is None


def test_resume_restarts_the_hold():
    paused = rollout.command(plan(hold=10), Command.PAUSE, 1001)
    resumed = rollout.command(paused, Command.RESUME, 2000)
    assert resumed.state is State.RUNNING and resumed.step_started_at == 2000
    assert step(resumed, "pass", False, 2005).apply_percent is None


@pytest.mark.parametrize("steps", [[], ["5", "1"], ["0", "150"]])
def test_bad_steps_are_refused(steps):
    with pytest.raises(ValueError):
        new_rollout("f", None, [Decimal(s) for s in steps], 1, reason="r", actor="a")


def test_rollouts_and_commands_round_trip_through_the_store(tmp_path):
    store = SqliteControlStore(tmp_path / "c.sqlite3")
    r = plan()
    rollout.register(store, r)
    assert rollout.all_rollouts(store) == [r]
    rollout.send_command(store, r.id, Command.PAUSE)
    assert rollout.take_command(store, r.id) is Command.PAUSE
    assert rollout.take_command(store, r.id) is None
    store.close()
