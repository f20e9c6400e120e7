"""`strangler rollout`: staged rollouts that advance only on passing guardrails."""

from __future__ import annotations

import time
from decimal import Decimal, InvalidOperation
from typing import Annotated

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
from cli.confirm import show_and_confirm
from control import rollout
from control.store import AuditEntry

# The rules parser is imported inside `start`, the one command here that parses rules.

app = typer.Typer(help="Staged rollouts, advanced by the guardrail monitor.",
                  no_args_is_help=True)
RolloutId = Annotated[str, typer.Argument(help="Rollout id (see `rollout status`).")]


def _steps(text: str) -> list[Decimal]:
    try:
        return [Decimal(s.strip()) for s in text.split(",") if s.strip()]
    except InvalidOperation:
        fail(f"--steps must be percentages separated by commas, not {text!r}", 2)


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
    db_path: DbPath = DEFAULT_DB, redis_url: RedisUrl = None, actor: Actor = None,
) -> None:
    """Start a staged rollout: apply the first step now; the monitor does the rest.

    Shows the blast radius of the first step and asks, like `ramp`. A first step below
    the current percentage is refused (exit 2) without --allow-lower.

    Example: strangler rollout start warranties --country IE --steps 1,5,25,50,100 --hold 30m \\
    --reason "INC-free week"
    """
    from control import operations
    from control.rules_loader import load_rules_text
    from guardrails.spec import parse_duration

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
        if any(r.funnel == funnel and r.state in rollout.ACTIVE
               for r in rollout.all_rollouts(store)):
            fail(f"a rollout of {funnel!r} is already in progress")
        text, sentence = operations.ramp_text(active.text, funnel, plan.country, plan.percent)
        show_and_confirm(current, load_rules_text(text, "next", f"rollout {funnel}"),
                         f"first step: {sentence}", yes=yes,
                         refuse_lower=None if allow_lower else (funnel, plan.country))
        operations.apply_rules_text(
            store, text, source=f"ramp {funnel}", actor=plan.actor,
            reason=f"rollout {plan.id} started: {reason} ({sentence})",
            expected_version=active.version)
        rollout.register(store, plan)
    console.print(f"rollout {plan.id} started: {funnel} {plan.country or 'all countries'} at "
                  f"{plan.steps[0]}%, then {', '.join(plan.steps[1:]) or 'done'}; "
                  f"each step holds {hold}")


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
                done = r.step_index + (1 if r.state is rollout.State.DONE else 0)
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
