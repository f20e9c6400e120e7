"""`strangler rules`: validate, schema, apply, history."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

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
from control.errors import RulesError

# The rules parser (pydantic, pycountry) is imported inside the commands that parse rules,
# so that `strangler kill` and `--help` do not pay for it.
if TYPE_CHECKING:
    from control.blast_radius import Change

app = typer.Typer(help="Validate, apply and inspect routing rules.", no_args_is_help=True)

FileArg = Annotated[Path, typer.Argument(help="Rules YAML file.", exists=False)]


@app.command()
def validate(file: FileArg, as_json: AsJson = False) -> None:
    """Check a rules file; on error print FILE:LINE: FIELD: MESSAGE and exit 1.

    Example: strangler rules validate rules/checkout.yaml
    """
    from control.rules_loader import load_rules_file

    try:
        rules = load_rules_file(file)
    except RulesError as exc:
        if as_json:
            print_json({"valid": False, "errors": [
                {"file": i.source, "line": i.line, "field": i.field, "message": i.message}
                for i in exc.issues
            ]})
            raise typer.Exit(1) from None
        fail(f"{file} is invalid:\n{exc}")
    summary = {
        "valid": True, "file": str(file),
        "funnels": {f.name: [{"id": r.id, "countries": sorted(r.countries) if r.countries
                              else "*", "percent": r.basis_points / 100} for r in f.rules]
                    for f in rules.funnels},
    }
    if as_json:
        print_json(summary)
        return
    console.print(f"[green]ok[/] {file}: {len(rules.funnels)} funnels, "
                  f"{sum(len(f.rules) for f in rules.funnels)} rules")


@app.command()
def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file.")] = None,
) -> None:
    """Print the JSON Schema of rules files (for editors).

    Example: strangler rules schema -o rules/rules.schema.json
    """
    from control.rules_schema import RulesFile

    text = json.dumps(RulesFile.model_json_schema(by_alias=True), indent=2, sort_keys=True) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)


@app.command()
def apply(
    file: FileArg, reason: Reason, db_path: DbPath = DEFAULT_DB,
    redis_url: RedisUrl = None, actor: Actor = None,
    expect_version: Annotated[int | None, typer.Option(
        help="Fail unless this is the active version (compare-and-set).")] = None,
) -> None:
    """Validate FILE and make it the active rules, as a new version.

    Example: strangler rules apply rules/checkout.yaml --reason "pilot IE at 50%"
    """
    from control.operations import apply_rules_text

    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {file}: {exc}")
    with store_for(db_path, redis_url) as store:
        expected: int | str | None = "active" if expect_version is None else expect_version
        record = apply_rules_text(store, text, source=str(file), actor=actor_name(actor),
                                  reason=reason, expected_version=expected)
    console.print(f"applied {file} as rules version {record.version}")


@app.command()
def history(
    db_path: DbPath = DEFAULT_DB, redis_url: RedisUrl = None, as_json: AsJson = False,
    limit: int = 20,
) -> None:
    """List applied rules versions, newest first.

    Example: strangler rules history --json
    """
    with store_for(db_path, redis_url) as store:
        records = store.rules_history(limit)
    if as_json:
        print_json([r.summary() for r in records])
        return
    print_rows(("version", "applied", "digest", "actor", "source", "reason"), [
        (f"v{r.version}", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.applied_at)),
         r.digest, r.actor, r.source, r.reason) for r in records])


def _changes_text(changes: list[Change]) -> str:
    if not changes:
        return "no funnel or country changes backend"
    return "\n".join(f"  {c.sentence()}" for c in changes)


def changes_json(changes: list[Change]) -> list[dict[str, object]]:
    return [{**asdict(c), "summary": c.sentence()} for c in changes]


@app.command()
def diff(
    file: FileArg, db_path: DbPath = DEFAULT_DB, redis_url: RedisUrl = None,
    as_json: AsJson = False,
) -> None:
    """Say what applying FILE would change, and its blast radius.

    For every funnel and country whose percentage changes: the share of units that would
    move backend. For every funnel or rule whose shadow (parity) section changes: what it
    shadows before and after.

    Example: strangler rules diff rules/checkout.yaml
    """
    from control.blast_radius import blast_radius
    from control.rules import shadow_changes
    from control.rules_loader import load_rules_file, load_rules_text

    try:
        new = load_rules_file(file)
    except RulesError as exc:
        fail(f"{file} is invalid:\n{exc}")
    with store_for(db_path, redis_url) as store:
        active = store.active_rules()
    old = load_rules_text(active.text, str(active.version)) if active else None
    changes = blast_radius(old, new)
    shadow = shadow_changes(old, new)
    if as_json:
        print_json({"from_version": active.version if active else None,
                    "changes": changes_json(changes), "shadow_changes": shadow})
        return
    base = f"version {active.version}" if active else "no rules (all legacy)"
    console.print(f"{file} against active {base}:\n{_changes_text(changes)}", markup=False)
    if shadow:
        console.print("shadow parity:\n" + "\n".join(f"  {line}" for line in shadow),
                      markup=False, soft_wrap=True)


@app.command()
def rollback(
    reason: Reason,
    version: Annotated[int | None, typer.Argument(help="Version to restore (default: the "
                                                       "one before the active one).")] = None,
    db_path: DbPath = DEFAULT_DB, redis_url: RedisUrl = None, actor: Actor = None,
) -> None:
    """Make an earlier rules version active again, as a new version.

    Example: strangler rules rollback 3 --reason "ramp caused declines"
    """
    from control.operations import apply_rules_text

    with store_for(db_path, redis_url) as store:
        active = store.active_rules()
        if active is None:
            fail("no rules have been applied yet")
        target = version if version is not None else active.version - 1
        record = store.rules_version(target)
        if record is None:
            fail(f"no rules version {target}")
        applied = apply_rules_text(
            store, record.text, source=f"rollback to v{target}", actor=actor_name(actor),
            reason=reason, expected_version=active.version,
        )
    console.print(f"rules version {target} restored as version {applied.version}")


@app.command()
def export(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file.")]
    = None,
    db_path: DbPath = DEFAULT_DB, redis_url: RedisUrl = None,
) -> None:
    """Write the active rules as YAML (CLI ramps and rollout steps included), for
    committing back to the rules file (GitOps); applying the export changes nothing.

    Example: strangler rules export -o rules/checkout.yaml
    """
    with store_for(db_path, redis_url) as store:
        active = store.active_rules()
    if active is None:
        fail("no rules are active")
    if output is None:
        typer.echo(active.text, nl=not active.text.endswith("\n"))
    else:
        output.write_text(active.text, encoding="utf-8")
        console.print(f"rules version {active.version} written to {output}")
