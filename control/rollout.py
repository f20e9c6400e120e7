"""Staged rollouts: ramp a funnel (or one country of it) step by step, on the guardrails' word.

A rollout holds each step for `hold_seconds`. It moves to the next step only when the hold
has elapsed and every guardrail of the funnel passes with enough data; with insufficient
data (or no telemetry) it waits; on a failing guardrail it stops, and the monitor's trip
leaves the kill switch latched. The state machine is pure (`step`); the monitor runs it
every tick and applies what it returns, so a rollout survives the CLI exiting.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from enum import StrEnum
from typing import Any

from control.store import ControlStore

INDEX_KEY = "rollouts:index"


class State(StrEnum):
    RUNNING = "running"
    WAITING = "waiting"  # hold elapsed, guardrails have not passed with enough data yet
    PAUSED = "paused"  # by a person
    DONE = "done"
    STOPPED = "stopped"  # a guardrail failed or a kill switch is set
    ABORTED = "aborted"  # by a person


ACTIVE = frozenset({State.RUNNING, State.WAITING, State.PAUSED})


class Command(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"


@dataclass(frozen=True)
class Rollout:
    id: str
    funnel: str
    country: str | None
    steps: tuple[str, ...]  # percentages as decimal strings
    hold_seconds: float
    reason: str
    actor: str
    created_at: float
    step_index: int = 0
    step_started_at: float = 0.0
    state: State = State.RUNNING
    detail: str = ""
    history: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def percent(self) -> Decimal:
        return Decimal(self.steps[self.step_index])

    def to_json(self) -> str:
        data = asdict(self)
        data["state"] = self.state.value
        return json.dumps(data)

    @classmethod
    def from_json(cls, raw: str) -> Rollout:
        data = json.loads(raw)
        data["steps"] = tuple(data["steps"])
        data["history"] = tuple(data["history"])
        data["state"] = State(data["state"])
        return cls(**data)


@dataclass(frozen=True)
class Step:
    """What the monitor must do: the new state, and a percentage to apply (or None)."""

    rollout: Rollout
    apply_percent: Decimal | None = None


def new_rollout(
    funnel: str, country: str | None, steps: list[Decimal], hold_seconds: float, *,
    reason: str, actor: str, now: float | None = None,
) -> Rollout:
    if not steps or any(not 0 <= s <= 100 for s in steps) or steps != sorted(steps):
        raise ValueError("steps must be increasing percentages between 0 and 100")
    now = time.time() if now is None else now
    return Rollout(
        id=uuid.uuid4().hex[:8], funnel=funnel, country=country,
        steps=tuple(str(s) for s in steps), hold_seconds=hold_seconds, reason=reason,
        actor=actor, created_at=now, step_started_at=now,
    )


def _note(r: Rollout, state: State, detail: str, now: float, **changes: Any) -> Rollout:
    entry = {"at": now, "state": state.value, "step": changes.get("step_index", r.step_index),
             "detail": detail}
    return replace(r, state=state, detail=detail, history=(*r.history, entry), **changes)


def command(r: Rollout, cmd: Command, now: float) -> Rollout:
    if r.state not in ACTIVE:
        return r
    if cmd is Command.PAUSE:
        return _note(r, State.PAUSED, "paused by a person", now)
    if cmd is Command.RESUME and r.state is State.PAUSED:
        return _note(r, State.RUNNING, "resumed", now, step_started_at=now)
    if cmd is Command.ABORT:
        return _note(r, State.ABORTED, "aborted by a person; percentages stay as they are", now)
    return r


def step(r: Rollout, verdict: str | None, killed: bool, now: float,
         failing: tuple[str, ...] = (), waiting_on: str | None = None) -> Step:
    """Advance one tick. `verdict`: the funnel's overall guardrail verdict ('pass', 'fail',
    'insufficient_data') or None when telemetry is missing; `failing` names the guardrails
    that failed; `waiting_on` says what an insufficient verdict lacks and for how long."""
    if r.state not in (State.RUNNING, State.WAITING):
        return Step(r)
    if killed:
        return Step(_note(r, State.STOPPED, "a kill switch is set: stopped", now))
    if verdict == "fail":
        what = f"guardrails failed: {', '.join(failing)}" if failing else "a guardrail failed"
        return Step(_note(r, State.STOPPED, f"{what}: stopped", now))
    if now - r.step_started_at < r.hold_seconds:
        return Step(r if r.state is State.RUNNING else _note(r, State.RUNNING, "holding", now))
    if verdict != "pass":
        why = "no telemetry" if verdict is None else "not enough data yet"
        detail = f"hold elapsed, waiting: {why}" + (f": {waiting_on}" if waiting_on else "")
        if r.state is State.WAITING:  # the wait goes on: what it lacks may change
            return Step(r if r.detail == detail else replace(r, detail=detail))
        return Step(_note(r, State.WAITING, detail, now))
    if r.step_index + 1 >= len(r.steps):
        return Step(_note(r, State.DONE, f"held {r.steps[-1]}% with guardrails passing", now))
    nxt = r.step_index + 1
    advanced = _note(r, State.RUNNING, f"guardrails pass: {r.steps[r.step_index]}% -> "
                     f"{r.steps[nxt]}%", now, step_index=nxt, step_started_at=now)
    return Step(advanced, Decimal(r.steps[nxt]))


# -- storage in the control store's meta ------------------------------------------------------


def _key(rollout_id: str) -> str:
    return f"rollout:{rollout_id}"


def save(store: ControlStore, r: Rollout) -> None:
    store.set_meta(_key(r.id), r.to_json())


def load(store: ControlStore, rollout_id: str) -> Rollout | None:
    raw = store.get_meta(_key(rollout_id))
    return Rollout.from_json(raw) if raw else None


def register(store: ControlStore, r: Rollout) -> None:
    ids = json.loads(store.get_meta(INDEX_KEY) or "[]")
    save(store, r)
    store.set_meta(INDEX_KEY, json.dumps([*ids, r.id]))


def all_rollouts(store: ControlStore) -> list[Rollout]:
    ids = json.loads(store.get_meta(INDEX_KEY) or "[]")
    found = (load(store, i) for i in ids)
    return [r for r in found if r is not None]


def send_command(store: ControlStore, rollout_id: str, cmd: Command) -> None:
    store.set_meta(f"{_key(rollout_id)}:command", cmd.value)


def take_command(store: ControlStore, rollout_id: str) -> Command | None:
    key = f"{_key(rollout_id)}:command"
    raw = store.get_meta(key)
    if not raw:
        return None
    store.set_meta(key, "")
    return Command(raw)
