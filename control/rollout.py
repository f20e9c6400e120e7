"""Staged rollouts: ramp a funnel (or one country of it) step by step, on the guardrails' word.

A rollout holds each step for `hold_seconds`. It moves to the next step only when the hold
has elapsed and every guardrail of the funnel passes with enough data; with insufficient
data (or no telemetry) it waits; on a failing guardrail it stops, and the monitor's trip
leaves the kill switch latched. The state machine is pure (`step`); the monitor runs it
every tick and applies what it returns, so a rollout survives the CLI exiting.

With a shadow parity gate (`strangler rollout start --require-parity 99.9`), the rollout
starts before its first step (`step_index` -1, at the percentage the slice had): it waits
there until the funnel's shadow parity meets the bar over at least `parity_min_units`
compared units (`shadow.report.parity_gate`), then applies its first step. Parity falling
under the bar afterwards pauses it; a person may resume it, as any pause, and it then goes
on until parity has met the bar again and falls again (the pause is on the fall, not on
the level: a resumed rollout is not paused again by the same low figure).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from control.store import ControlStore

if TYPE_CHECKING:  # the gate's verdict; shadow.report is imported where it is computed
    from shadow.report import ParityGate

INDEX_KEY = "rollouts:index"


class State(StrEnum):
    RUNNING = "running"
    # hold elapsed, guardrails have not passed with enough data yet; or, before the first
    # step, shadow parity does not meet the bar yet
    WAITING = "waiting"
    PAUSED = "paused"  # by a person, or by shadow parity falling under the bar
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
    step_index: int = 0  # -1: before the first step, waiting for shadow parity
    step_started_at: float = 0.0
    state: State = State.RUNNING
    detail: str = ""
    history: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    # the shadow parity gate: the bar in percent (None: no gate), the compared units it
    # needs, whether parity met the bar when last seen (a fall from met pauses), and the
    # slice's percentage before the first step
    parity_bar: float | None = None
    parity_min_units: int = 0
    parity_met: bool = False
    before_percent: str = "0"

    @property
    def percent(self) -> Decimal:
        """The percentage the rollout holds the slice at now."""
        if self.step_index < 0:
            return Decimal(self.before_percent)
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
    reason: str, actor: str, now: float | None = None, parity_bar: float | None = None,
    parity_min_units: int = 0, before_percent: Decimal = Decimal(0),
) -> Rollout:
    """A new rollout at its first step; with `parity_bar` (percent), before it, waiting
    for shadow parity at `before_percent`."""
    if not steps or any(not 0 <= s <= 100 for s in steps) or steps != sorted(steps):
        raise ValueError("steps must be increasing percentages between 0 and 100")
    now = time.time() if now is None else now
    plan = Rollout(
        id=uuid.uuid4().hex[:8], funnel=funnel, country=country,
        steps=tuple(str(s) for s in steps), hold_seconds=hold_seconds, reason=reason,
        actor=actor, created_at=now, step_started_at=now,
    )
    if parity_bar is None:
        return plan
    return with_parity_gate(plan, parity_bar, parity_min_units, before_percent)


def with_parity_gate(r: Rollout, bar: float, min_units: int,
                     before_percent: Decimal) -> Rollout:
    """`r` moved before its first step, waiting at `before_percent` (the slice's percentage
    now) until shadow parity meets `bar` percent over at least `min_units` compared units."""
    if not 0 < bar <= 100:
        raise ValueError(f"the parity bar must be a percentage above 0 and at most 100, "
                         f"not {bar:g}")
    if min_units < 1:
        raise ValueError(f"the parity gate needs at least 1 compared unit, not {min_units}")
    return replace(r, step_index=-1, state=State.WAITING, parity_bar=bar,
                   parity_min_units=min_units, before_percent=str(before_percent),
                   detail=f"waiting for shadow parity of at least {bar:g}% over {min_units} "
                   "compared units (judged at the monitor's next tick)")


def floor_percent(share: float) -> str:
    """A share 0..1 as a percentage, rounded down to 0.01 (never shown as meeting a bar it
    misses): 0.99899 -> "99.89", 0.992 -> "99.2", 1.0 -> "100"."""
    value = (Decimal(repr(share)) * 100).quantize(Decimal("0.01"), rounding=ROUND_FLOOR)
    return f"{value:f}".rstrip("0").rstrip(".")


def parity_text(gate: ParityGate) -> str:
    """'99.2% over 180 of 200 units'; '99.95% over 400 units'."""
    if gate.parity is None or gate.units == 0:
        return f"no units compared yet (0 of {gate.min_units})"
    over = (f"{gate.units} of {gate.min_units} units" if gate.units < gate.min_units
            else f"{gate.units} units")
    return f"{floor_percent(gate.parity)}% over {over}"


def parity_wait(gate: ParityGate | None, funnel: str, bar: float, min_units: int) -> str:
    """What a rollout waiting at its gate says (`rollout status`): "waiting for shadow
    parity: 99.2% over 180 of 200 units, need 99.9%"."""
    if gate is None:
        return (f"waiting for shadow parity: no recent shadow report of {funnel} (the proxy "
                f"holding the monitor lease writes one every tick), need {bar:g}% over "
                f"{min_units} compared units")
    return f"waiting for shadow parity: {parity_text(gate)}, need {bar:g}%"


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
        detail = "resumed"
        if r.parity_bar is not None and r.step_index >= 0 and not r.parity_met:
            detail = (f"resumed under the shadow parity bar ({r.parity_bar:g}%): the rollout "
                      "goes on; parity falling again after it meets the bar pauses it")
        return _note(r, State.RUNNING, detail, now, step_started_at=now)
    if cmd is Command.ABORT:
        return _note(r, State.ABORTED, "aborted by a person; percentages stay as they are", now)
    return r


def _wait(r: Rollout, detail: str, now: float) -> Step:
    """Waiting, saying what for; a wait that goes on changes its detail only (no history
    entry per tick)."""
    if r.state is State.WAITING:  # the wait goes on: what it lacks may change
        return Step(r if r.detail == detail else replace(r, detail=detail))
    return Step(_note(r, State.WAITING, detail, now))


def step(r: Rollout, verdict: str | None, killed: bool, now: float,
         failing: tuple[str, ...] = (), waiting_on: str | None = None,
         parity: ParityGate | None = None) -> Step:
    """Advance one tick. `verdict`: the funnel's overall guardrail verdict ('pass', 'fail',
    'insufficient_data') or None when telemetry is missing; `failing` names the guardrails
    that failed; `waiting_on` says what an insufficient verdict lacks and for how long;
    `parity`: the shadow parity gate judged at the rollout's bar (None: no recent shadow
    report), read only by a rollout with a bar."""
    if r.state not in (State.RUNNING, State.WAITING):
        return Step(r)
    if killed:
        return Step(_note(r, State.STOPPED, "a kill switch is set: stopped", now))
    if verdict == "fail":
        what = f"guardrails failed: {', '.join(failing)}" if failing else "a guardrail failed"
        return Step(_note(r, State.STOPPED, f"{what}: stopped", now))
    if r.parity_bar is not None:
        met = parity is not None and parity.met
        if r.step_index < 0:  # at the gate, before the first step
            if parity is None or not met:
                return _wait(r, parity_wait(parity, r.funnel, r.parity_bar,
                                            r.parity_min_units), now)
            first = _note(r, State.RUNNING, f"shadow parity {parity_text(parity)} meets "
                          f"{r.parity_bar:g}%: first step {r.steps[0]}%", now, step_index=0,
                          step_started_at=now, parity_met=True)
            return Step(first, Decimal(r.steps[0]))
        measured = parity is not None and parity.parity is not None and (
            parity.units >= parity.min_units)
        if measured and not met and r.parity_met:
            assert parity is not None
            return Step(_note(r, State.PAUSED, "shadow parity fell under the bar: "
                              f"{parity_text(parity)}, need {r.parity_bar:g}%: paused (resume "
                              "it to go on regardless)", now, parity_met=False))
        if met and not r.parity_met:
            r = replace(r, parity_met=True)
    if now - r.step_started_at < r.hold_seconds:
        return Step(r if r.state is State.RUNNING else _note(r, State.RUNNING, "holding", now))
    if verdict != "pass":
        why = "no telemetry" if verdict is None else "not enough data yet"
        detail = f"hold elapsed, waiting: {why}" + (f": {waiting_on}" if waiting_on else "")
        return _wait(r, detail, now)
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
