"""`strangler store`: create the control store explicitly, and see which one it is."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from cli.common import (
    DEFAULT_DB,
    EXIT_UNAVAILABLE,
    AsJson,
    DbPath,
    RedisUrl,
    console,
    fail,
    print_json,
)
from control.store import StoreUnavailable, open_store

app = typer.Typer(help="The control store: create it, see which one it is.",
                  no_args_is_help=True)


@app.command()
def init(db_path: DbPath = DEFAULT_DB, redis_url: RedisUrl = None) -> None:
    """Create the control store (the proxy also does when it first starts), so that rules
    can be applied before any proxy runs. A store that exists is left as it is.

    Example: strangler store init --db-path /var/lib/strangler/strangler.sqlite3
    """
    try:
        store = open_store(redis_url, db_path)
        try:
            identity = store.initialize()
        finally:
            store.close()
    except StoreUnavailable as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    console.print(f"control store at {redis_url or store_location(db_path)}: generation "
                  f"{identity.generation}")


def store_location(db_path: str) -> str:
    return str(Path(db_path).absolute())


@app.command()
def status(db_path: DbPath = DEFAULT_DB, redis_url: RedisUrl = None,
           as_json: AsJson = False) -> None:
    """Which store this is (its generation, and the one it was restored from), whether it
    keeps its data across restarts, and its change counter.

    Example: strangler store status --redis-url redis://redis:6379/0
    """
    try:
        store = open_store(redis_url, db_path, create=False)
        try:
            identity, durability, epoch = store.identity(), store.durability(), store.epoch()
        finally:
            store.close()
    except StoreUnavailable as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    data = {
        "location": redis_url or store_location(db_path),
        "generation": identity.generation if identity else None,
        "created_at": identity.created_at if identity else None,
        "restored_from": identity.restored_from if identity else None,
        "durability": durability or "ok", "epoch": epoch,
    }
    if as_json:
        print_json(data)
        return
    console.print(f"location:   {data['location']}")
    if identity is None:
        console.print("generation: none: no proxy has started on this store, or it lost its "
                      "data (the proxies restore their last known state into it)")
    else:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(identity.created_at))
        restored = f", restored from {identity.restored_from}" if identity.restored_from else ""
        console.print(f"generation: {identity.generation} (since {when}{restored})")
    console.print(f"durability: {data['durability']}")
    console.print(f"epoch:      {epoch}")
    if identity is None:
        raise typer.Exit(EXIT_UNAVAILABLE)
