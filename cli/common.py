"""Shared options and helpers of the `strangler` commands."""

from __future__ import annotations

import getpass
import json
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from control.errors import ControlError, RulesError
from control.store import ControlStore, StoreUnavailable, VersionConflict, open_store

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFLICT = 4
EXIT_UNAVAILABLE = 5

EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 error (invalid rules, refused operation), 2 usage, "
    "3 guardrail failing, 4 concurrent change (version conflict), 5 store unavailable."
)

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

DbPath = Annotated[str, typer.Option(
    "--db-path", envvar="STRANGLER_DB_PATH", help="Embedded control store (SQLite file).",
)]
RedisUrl = Annotated[str | None, typer.Option(
    "--redis-url", envvar="STRANGLER_REDIS_URL",
    help="Use the Redis control store shared by all replicas.",
)]
Actor = Annotated[str | None, typer.Option(
    "--actor", envvar="STRANGLER_ACTOR", help="Who makes the change (default: user@host).",
)]
Reason = Annotated[str, typer.Option("--reason", help="Why: recorded in the audit log.")]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

DEFAULT_DB = "var/strangler.sqlite3"


def actor_name(actor: str | None) -> str:
    if actor:
        return actor
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def store_for(
    db_path: str, redis_url: str | None, *, lost_ok: bool = False,
) -> Iterator[ControlStore]:
    """Open the control store the proxy reads; turn domain errors into messages and exit
    codes. Never creates a store: a missing SQLite file, or a Redis without the proxies'
    store identity (never started there, or lost its data), is refused (exit 5), except
    with `lost_ok` (a kill: more legacy is always safe, and a restore keeps it)."""
    try:
        store = open_store(redis_url, db_path, create=False)
    except StoreUnavailable as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    try:
        if not lost_ok and store.identity() is None:
            fail(f"the control store at {redis_url or db_path} holds no strangler state: no "
                 "proxy has started on it, or it lost its data (the proxies restore their "
                 "last known state within seconds; see `strangler store status`)",
                 EXIT_UNAVAILABLE)
        yield store
    except VersionConflict as exc:
        fail(f"{exc}; re-run to apply on top of the new version", EXIT_CONFLICT)
    except StoreUnavailable as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    except RulesError as exc:
        fail(f"invalid rules:\n{exc}")
    except ControlError as exc:
        fail(str(exc))
    finally:
        store.close()


def print_rows(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    """A table on a terminal; tab-separated plain text, never truncated, when piped."""
    if console.is_terminal:
        table = Table(*header, box=box.SIMPLE)
        for row in rows:  # as text: `items[sku].tax` or a reason "[INC-1]" is not markup
            table.add_row(*(Text(cell) for cell in row))
        console.print(table)
        return
    for row in (header, *rows):
        sys.stdout.write("\t".join(row) + "\n")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
