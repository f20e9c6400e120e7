"""`strangler rollout`: staged rollouts that advance only on passing guardrails."""

from __future__ import annotations

import time
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from cli.common import (
    DEFAULT_DB,
    Actor,
    AsJson,
    DbPath,
    Reason,
    RedisUrl,
    actor_name,
    console,
    fail,
    print_json,
    print_rows,
    store_for,
)
from cli.confirm import effective_percent, show_and_confirm
from control import rollout
from control.store import AuditEntry

if TYPE_CHECKING:
    from control.rules import Funnel
    from shadow.spec import ShadowConfig

# The rules parser is imported inside `start`, the one command here that parses rules.

app = typer.Typer(help="Staged rollouts, advanced by the guardrail monitor.",
                  no_args_is_help=True)
RolloutId = Annotated[str, typer.Argument(help="Rollout id (see `rollout status`).")]


def _steps(text: str) -> list[Decimal]:
    try:
        return [Decimal(s.strip()) for s in text.split(",") if s.strip()]
    except InvalidOperation:
        fail(f"--steps must be percentages separated by commas, not {text!r}", 2)


def _parity_bar(text: str | None, min_units: int | None) -> float | None:
    """--require-parity as a percentage above 0 and at most 100 (exit 2 otherwise)."""
    if text is None:
        if min_units is not None:
            fail("--parity-min-units goes with --require-parity", 2)
        return None
    try:
        bar = Decimal(text.strip().removesuffix("%"))
    except InvalidOperation:
        fail(f"--require-parity must be a percentage such as 99.9, not {text!r}", 2)
    if not bar.is_finite() or not 0 < bar <= 100:
        fail(f"--require-parity must be above 0 and at most 100 (percent), not {text}", 2)
    if min_units is not None and min_units < 1:
        fail(f"--parity-min-units must be at least 1, not {min_units}", 2)
    return float(bar)


def _shadow_of(target: Funnel, country: str | None) -> ShadowConfig | None:
    """The shadow of the traffic a rollout moves, when one is on (share above 0): the one
    of `country`'s rule, or for every country the funnel's (else the first rule's)."""
    if country is not None:
        found = target.shadow_for(country)
        return found if found is not None and found.basis_points > 0 else None
    configs = [target.shadow, *(r.shadow for r in target.rules)]
    return next((c for c in configs if c is not None and c.basis_points > 0), None)


@app.command()
def start(
    funnel: Annotated[str, typer.Argument(help="Funnel to ramp.")],
    reason: Reason,
    steps: Annotated[str, typer.Option(help="Percentages, in order.")] = "1,5,25,50,100",
    hold: Annotated[str, typer.Option(help="How long each step holds (30s, 30m, 2h).")] = "30m",
    country: Annotated[str | None, typer.Option(help="One country (default: all).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking.")] = False,
    allow_lower: Annotated[bool, typer.Option(
        help="Allow a first step below the current percentage (moves units back to legacy)."
    )] = False,
    require_parity: Annotated[str | None, typer.Option(
        "--require-parity", metavar="PERCENT",
        help="Wait before the first step until the funnel's shadow parity (the share of "
        "compared units whose responses all matched legacy's) is at least PERCENT, e.g. "
        "99.9; parity falling under it later pauses the rollout. Needs a shadow: section "
        "in the funnel's rules (docs/shadow.md).")] = None,
    parity_min_units: Annotated[int | None, typer.Option(
        "--parity-min-units", metavar="N",
        help="Compared units the parity gate needs before it judges (default: the "
        "shadow's min_units).")] = None,
    db_path: DbPath = DEFAULT_DB, redis_url: RedisUrl = None, actor: Actor = None,
) -> None:
    """Start a staged rollout: apply the first step now; the monitor does the rest.

    Shows the blast radius of the first step and asks, like `ramp`. A first step below
    the current percentage is refused (exit 2) without --allow-lower. With
    --require-parity, nothing is applied now: the rollout waits at the current percentage
    until shadow parity meets the bar, then the monitor applies its first step.

    Example: strangler rollout start warranties --country IE --steps 1,5,25,50,100 --hold 30m \\
    --reason "INC-free week" [--require-parity 99.9]
    """
    from control import operations
    from control.rules_loader import load_rules_text
    from guardrails.spec import parse_duration

    bar = _parity_bar(require_parity, parity_min_units)
    try:
        hold_seconds = parse_duration(hold)
        plan = rollout.new_rollout(funnel, country.upper() if country else None, _steps(steps),
                                   hold_seconds, reason=reason, actor=actor_name(actor))
    except ValueError as exc:
        fail(str(exc), 2)
    with store_for(db_path, redis_url) as store:
        active = store.active_rules()
        if active is None:
            fail("no rules are active: apply a rules file first")
        current = load_rules_text(active.text, str(active.version))
        target = current.funnel(funnel)
        if target is None:
            fail(f"no funnel named {funnel!r}")
        if target.guardrails is None:
            fail(f"funnel {funnel!r} has no guardrails: a rollout could never advance")
        if bar is not None:
            shadow = _shadow_of(target, plan.country)
            if shadow is None:
                where = f" for {plan.country}" if plan.country else ""
                fail(f"funnel {funnel!r} has no shadow configured{where}: --require-parity "
                     "needs a shadow: section with a share above 0 in its rules, so that "
                     "the core is compared with legacy (docs/shadow.md)", 2)
            before = effective_percent(current, funnel, plan.country) or Decimal(0)
            plan = rollout.with_parity_gate(plan, bar, parity_min_units or shadow.min_units,
                                            before)
        if any(r.funnel == funnel and r.state in rollout.ACTIVE
               for r in rollout.all_rollouts(store)):
            fail(f"a rollout of {funnel!r} is already in progress")
        first = Decimal(plan.steps[0])
        text, sentence = operations.ramp_text(active.text, funnel, plan.country, first)
        show_and_confirm(current, load_rules_text(text, "next", f"rollout {funnel}"),
                         f"first step{' (once shadow parity is met)' if bar else ''}: "
                         f"{sentence}", yes=yes,
                         refuse_lower=None if allow_lower else (funnel, plan.country))
        if bar is None:
            operations.apply_rules_text(
                store, text, source=f"ramp {funnel}", actor=plan.actor,
                reason=f"rollout {plan.id} started: {reason} ({sentence})",
                expected_version=active.version)
        else:
            store.record_audit(AuditEntry(
                time.time(), plan.actor, "rollout.start", plan.id,
                f"{reason} (waits for shadow parity >= {bar:g}%, then {sentence})",
                {"funnel": funnel, "country": plan.country, "steps": list(plan.steps),
                 "require_parity": bar, "parity_min_units": plan.parity_min_units}))
        rollout.register(store, plan)
    where = f"{funnel} {plan.country or 'all countries'}"
    then = f"{', '.join(plan.steps[1:]) or 'done'}; each step holds {hold}"
    if bar is None:
        console.print(f"rollout {plan.id} started: {where} at {plan.steps[0]}%, then {then}")
    else:
        console.print(f"rollout {plan.id} started: {where} waits at {plan.percent}% for shadow "
                      f"parity of at least {bar:g}% over {plan.parity_min_units} compared "
                      f"units (`strangler shadow status`), then steps "
                      f"{', '.join(s + '%' for s in plan.steps)}; each step holds {hold}")


def _rows(db_path: str, redis_url: str | None) -> list[rollout.Rollout]:
    with store_for(db_path, redis_url) as store:
        return rollout.all_rollouts(store)


@app.command()
def status(
    db_path: DbPath = DEFAULT_DB, redis_url: RedisUrl = None, as_json: AsJson = False,
    follow: Annotated[bool, typer.Option(help="Follow the active rollouts until they end.")]
    = False,
) -> None:
    """Rollouts with their step, state and what they wait for.

    Example: strangler rollout status --follow
    """
    if follow:
        _follow(db_path, redis_url)
        return
    rows = _rows(db_path, redis_url)
    if as_json:
        print_json([{**r.__dict__, "state": r.state.value, "percent": str(r.percent)}
                    for r in rows])
        return
    if not rows:
        console.print("no rollouts")
        return
    print_rows(("rollout", "funnel", "country", "step", "percent", "state", "detail"), [
        (r.id, r.funnel, r.country or "*", f"{r.step_index + 1}/{len(r.steps)}",
         f"{r.percent}%", r.state.value, r.detail) for r in rows])


def _follow(db_path: str, redis_url: str | None) -> None:
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.fields[state]}"), console=console) as progress:
        tasks: dict[str, TaskID] = {}
        while True:
            rows = [r for r in _rows(db_path, redis_url)
                    if r.state in rollout.ACTIVE or r.id in tasks]
            for r in rows:
                if r.id not in tasks:
                    tasks[r.id] = progress.add_task(f"{r.id} {r.funnel}", total=len(r.steps),
                                                    state="")
                done = max(0, r.step_index + (1 if r.state is rollout.State.DONE else 0))
                progress.update(tasks[r.id], completed=done,
                                state=f"{r.percent}% {r.state.value}: {r.detail}")
            if not any(r.state in rollout.ACTIVE for r in rows):
                return
            time.sleep(1)


def _command(rollout_id: str, cmd: rollout.Command, reason: str, db_path: str,
             redis_url: str | None, actor: str | None) -> None:
    with store_for(db_path, redis_url) as store:
        current = rollout.load(store, rollout_id)
        if current is None:
            fail(f"no rollout {rollout_id}")
        if current.state not in rollout.ACTIVE:
            fail(f"rollout {rollout_id} is {current.state.value}")
        rollout.send_command(store, rollout_id, cmd)
        store.record_audit(AuditEntry(time.time(), actor_name(actor), f"rollout.{cmd.value}",
                                      rollout_id, reason))
    console.print(f"rollout {rollout_id}: {cmd.value} requested (the monitor applies it "
                  "within one tick)")


@app.command()
def pause(rollout_id: RolloutId, reason: Reason, db_path: DbPath = DEFAULT_DB,
          redis_url: RedisUrl = None, actor: Actor = None) -> None:
    """Hold the rollout at its current step.

    Example: strangler rollout pause 1a2b3c4d --reason "lunch"
    """
    _command(rollout_id, rollout.Command.PAUSE, reason, db_path, redis_url, actor)


@app.command()
def resume(rollout_id: RolloutId, reason: Reason, db_path: DbPath = DEFAULT_DB,
           redis_url: RedisUrl = None, actor: Actor = None) -> None:
    """Continue a paused rollout.  Example: strangler rollout resume 1a2b3c4d --reason x"""
    _command(rollout_id, rollout.Command.RESUME, reason, db_path, redis_url, actor)


@app.command()
def abort(rollout_id: RolloutId, reason: Reason, db_path: DbPath = DEFAULT_DB,
          redis_url: RedisUrl = None, actor: Actor = None) -> None:
    """Stop the rollout; percentages stay where they are.  Example: strangler rollout abort ID
    --reason x"""
    _command(rollout_id, rollout.Command.ABORT, reason, db_path, redis_url, actor)
