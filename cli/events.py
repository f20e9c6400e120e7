"""`strangler events`: inspect and replay the checkout core's dead-lettered events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

# checkout_core is imported inside the commands: every other `strangler` command, and the
# proxy process of `strangler serve`, would otherwise load it (0.3 s and ~10 MB).
if TYPE_CHECKING:
    from checkout_core.config import CoreSettings

app = typer.Typer(help="Checkout core events: the dead-letter queue and replays.",
                  no_args_is_help=True)
dlq_app = typer.Typer(help="Dead-lettered events (messages consumers gave up on).",
                      no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")

DbPath = Annotated[Path, typer.Option("--db-path", envvar="CHECKOUT_CORE_DB_PATH",
                                      help="The core's SQLite file (embedded mode).")]
RedisUrl = Annotated[str | None, typer.Option("--redis-url", envvar="STRANGLER_REDIS_URL",
                                              help="Redis URL (distributed mode).")]
DEFAULT_DB = Path("var/checkout_core.sqlite3")


def _settings(db_path: Path, redis_url: str | None) -> CoreSettings:
    from checkout_core.config import CoreSettings

    return CoreSettings(db_path=db_path, redis_url=redis_url or None)


@dlq_app.command("list")
def dlq_list(
    db_path: DbPath = DEFAULT_DB,
    redis_url: RedisUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List the dead letters waiting for a replay."""
    import asyncio

    from checkout_core.dead_letters import dead_letter_json, list_dead_letters

    letters = asyncio.run(list_dead_letters(_settings(db_path, redis_url)))
    rows = [dead_letter_json(letter) for letter in letters]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("id", "type", "idempotency key", "attempts", "parked at", "error",
                  title=f"{len(rows)} dead letter(s)")
    for row in rows:
        table.add_row(row["id"], str(row["type"]), str(row["idempotency_key"]),
                      str(row["attempts"]), row["parked_at"], row["error"])
    Console().print(table)


@app.command("replay")
def replay(
    ids: Annotated[list[str] | None, typer.Option("--id", help="A dead letter id (repeatable).")]
    = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    db_path: DbPath = DEFAULT_DB,
    redis_url: RedisUrl = None,
) -> None:
    """Put dead letters back on the event stream for their consumers to retry."""
    import asyncio

    from checkout_core.dead_letters import UnknownDeadLetter, replay_dead_letters

    if bool(ids) == replay_all:
        typer.echo("Give either --id ID (one or more) or --all.", err=True)
        raise typer.Exit(1)
    try:
        replayed = asyncio.run(
            replay_dead_letters(_settings(db_path, redis_url), None if replay_all else ids)
        )
    except UnknownDeadLetter as exc:
        typer.echo(f"Nothing replayed: {exc.args[0]}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"Replayed {len(replayed)} dead letter(s).")
    for dead_id in replayed:
        typer.echo(f"  {dead_id}")
