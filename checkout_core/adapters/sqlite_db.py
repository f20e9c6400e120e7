"""The SQLite file: schema, connections and one transaction per unit of work.

Each transaction opens its own connection in a worker thread and closes it at the end, so
the event loop never blocks on the database and no connection outlives its use. The file is
in WAL mode (readers never wait for the writer); writers take the lock up front
(`BEGIN IMMEDIATE`) and wait up to `busy_timeout` for each other. Commits are fsynced
(`synchronous=FULL`) unless configured otherwise.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Literal, TypeVar

T = TypeVar("T")
Synchronous = Literal["NORMAL", "FULL"]
"""FULL fsyncs every commit (an acknowledged order survives a power loss); NORMAL in WAL
mode survives process crashes only."""


ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("carts", "shadow", "INTEGER NOT NULL DEFAULT 0"),
    ("checkouts", "shadow", "INTEGER NOT NULL DEFAULT 0"),
)
"""(table, column, declaration) of the columns added to schema.sql after its table was first
released, oldest first: `initialize` adds them to an older file's tables."""


def _schema() -> str:
    return resources.files("checkout_core.adapters").joinpath("schema.sql").read_text("utf-8")


def _add_columns(conn: sqlite3.Connection) -> None:
    """Add `ADDED_COLUMNS` missing from existing tables (one transaction, so two processes
    that open an older file together add each column once). Tables that do not exist yet
    are left to schema.sql, which creates them whole."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, column, declaration in ADDED_COLUMNS:
            columns = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
            if columns and column not in columns:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class SqliteDatabase:
    def __init__(
        self, path: Path, busy_timeout_ms: int = 5000, synchronous: Synchronous = "FULL"
    ) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.synchronous = synchronous

    def initialize(self) -> None:
        """Create the file, switch it to WAL, add the columns an older file lacks, and create
        missing tables and indexes (idempotent)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self.connect()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            _add_columns(conn)
            conn.executescript(_schema())
        finally:
            conn.close()

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return conn

    def transaction(self, work: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        conn = self.connect()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = work(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result
        finally:
            conn.close()

    async def run(self, work: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        return await asyncio.to_thread(self.transaction, work, write=write)

    async def ping(self) -> None:
        await self.run(lambda conn: conn.execute("SELECT 1").fetchone(), write=False)
