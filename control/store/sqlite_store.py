"""Control store in a SQLite file: the embedded default.

Several processes (proxy replicas, the CLI) may share the file: writes take an immediate
transaction, so a compare-and-set apply cannot lose an update.

The store remembers the file it opened (device and inode): when the path is deleted or
points at another file, `identity()` raises StoreLost instead of reading a ghost.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from control.store.base import (
    AuditEntry,
    KillSwitch,
    RestoreState,
    RulesVersion,
    StoreError,
    StoreIdentity,
    StoreLost,
    StoreMissing,
    StoreUnavailable,
    VersionConflict,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rules_versions (
    version INTEGER PRIMARY KEY, text TEXT NOT NULL, digest TEXT NOT NULL,
    applied_at REAL NOT NULL, actor TEXT NOT NULL, reason TEXT NOT NULL, source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS active_rules (
    id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kill_switches (
    scope TEXT PRIMARY KEY, reason TEXT NOT NULL, actor TEXT NOT NULL, at REAL NOT NULL,
    evidence TEXT
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, target TEXT NOT NULL, reason TEXT NOT NULL, details TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', '0');
"""

_RULES_COLUMNS = "version, text, digest, applied_at, actor, reason, source"


class _NothingToDo(Exception):
    """Raised inside a transaction to roll it back without an error."""


_IDENTITY_KEYS = ("generation", "created_at", "restored_from")


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class SqliteControlStore:
    def __init__(self, path: str | Path, *, create: bool = True, initialize: bool = True,
                 ) -> None:
        self.path = Path(path).absolute()
        self._lock = threading.Lock()
        self._db = self._connect(create)
        if create and initialize:
            self.initialize()

    def _connect(self, create: bool) -> sqlite3.Connection:
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.is_file():
            raise StoreMissing(
                f"no control store at {self.path}: the proxy creates it when it starts. Run "
                "the command where the proxy runs, or pass --db-path (STRANGLER_DB_PATH) or "
                "--redis-url (STRANGLER_REDIS_URL)")
        try:
            db = sqlite3.connect(f"file:{self.path}?mode={'rwc' if create else 'rw'}",
                                 uri=True, timeout=10, isolation_level=None,
                                 check_same_thread=False)
            # A rollback journal, not WAL: a WAL file outlives a deleted or replaced database
            # and is replayed into whatever file is at the path next, resurrecting the old
            # state into it. Writes here are rare (kills, rules, reports); reads are short.
            db.execute("PRAGMA journal_mode=DELETE")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open control store {self.path}: {exc}") from exc
        self._file = _file_id(self.path)
        return db

    def reconnect(self) -> None:
        """Open the file now at the path (created empty if missing): after StoreLost, the
        proxy restores its last known state into it."""
        with self._lock:
            self._db.close()
            self._db = self._connect(create=True)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'epoch'")
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"control store {self.path}: {exc}") from exc

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"control store {self.path}: {exc}") from exc

    def epoch(self) -> int:
        rows = self._query("SELECT value FROM meta WHERE key = 'epoch'")
        return int(str(rows[0][0]))

    def identity(self) -> StoreIdentity | None:
        now = _file_id(self.path)
        if now != self._file:
            what = "deleted" if now is None else "replaced by another file"
            raise StoreLost(f"control store {self.path} was {what} after it was opened")
        rows = {str(k): v for k, v in self._query(
            "SELECT key, value FROM meta WHERE key IN (?, ?, ?)", _IDENTITY_KEYS)}
        if "generation" not in rows:
            return None
        return StoreIdentity(str(rows["generation"]), float(str(rows["created_at"])),
                             str(rows["restored_from"]) if rows.get("restored_from") else None)

    def initialize(self) -> StoreIdentity:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('generation', ?)",
                       (uuid.uuid4().hex,))
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('created_at', ?)",
                       (repr(time.time()),))
        identity = self.identity()
        assert identity is not None
        return identity

    def restore(self, state: RestoreState) -> None:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM meta WHERE key = 'generation'").fetchone():
                raise StoreError(f"control store {self.path} has an identity: not restored")
            ident = state.identity
            db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [
                ("generation", ident.generation), ("created_at", repr(ident.created_at)),
                ("restored_from", ident.restored_from or "")])
            if state.rules is not None:
                r = state.rules
                db.execute(
                    f"INSERT OR REPLACE INTO rules_versions ({_RULES_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (r.version, r.text, r.digest, r.applied_at, r.actor, r.reason, r.source))
                db.execute("INSERT OR REPLACE INTO active_rules (id, version) VALUES (1, ?)",
                           (r.version,))
            db.executemany(
                "INSERT OR IGNORE INTO kill_switches (scope, reason, actor, at, evidence) "
                "VALUES (?, ?, ?, ?, ?)",
                [(k.scope, k.reason, k.actor, k.at,
                  json.dumps(k.evidence) if k.evidence is not None else None)
                 for k in state.kills])
            for entry in sorted(state.audit, key=lambda e: e.at):
                self._audit(db, entry)

    def durability(self) -> str | None:
        return None

    def active_rules(self) -> RulesVersion | None:
        rows = self._query(
            f"SELECT {_RULES_COLUMNS} FROM rules_versions "
            "WHERE version = (SELECT version FROM active_rules WHERE id = 1)"
        )
        return RulesVersion(*rows[0]) if rows else None  # type: ignore[arg-type]

    def rules_version(self, version: int) -> RulesVersion | None:
        rows = self._query(
            f"SELECT {_RULES_COLUMNS} FROM rules_versions WHERE version = ?", (version,)
        )
        return RulesVersion(*rows[0]) if rows else None  # type: ignore[arg-type]

    def rules_history(self, limit: int = 50) -> list[RulesVersion]:
        rows = self._query(
            f"SELECT {_RULES_COLUMNS} FROM rules_versions ORDER BY version DESC LIMIT ?",
            (limit,),
        )
        return [RulesVersion(*row) for row in rows]  # type: ignore[arg-type]

    def apply_rules(
        self, text: str, digest: str, *, expected_version: int | None, actor: str, reason: str,
        source: str, audit: AuditEntry,
    ) -> RulesVersion:
        with self._tx() as db:
            row = db.execute("SELECT version FROM active_rules WHERE id = 1").fetchone()
            active = row[0] if row else None
            if active != expected_version:
                raise VersionConflict(expected_version, active)
            top = db.execute("SELECT COALESCE(MAX(version), 0) FROM rules_versions").fetchone()
            record = RulesVersion(
                top[0] + 1, text, digest, audit.at, actor, reason, source
            )
            db.execute(
                f"INSERT INTO rules_versions ({_RULES_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (record.version, text, digest, record.applied_at, actor, reason, source),
            )
            db.execute(
                "INSERT INTO active_rules (id, version) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                (record.version,),
            )
            self._audit(db, audit)
        return record

    def kill_switches(self) -> dict[str, KillSwitch]:
        rows = self._query("SELECT scope, reason, actor, at, evidence FROM kill_switches")
        return {
            str(scope): KillSwitch(
                str(scope), str(reason), str(actor), float(str(at)),
                json.loads(str(evidence)) if evidence else None,
            )
            for scope, reason, actor, at, evidence in rows
        }

    def set_kill(self, switch: KillSwitch, audit: AuditEntry) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO kill_switches (scope, reason, actor, at, evidence) "
                "VALUES (?, ?, ?, ?, ?)",
                (switch.scope, switch.reason, switch.actor, switch.at,
                 json.dumps(switch.evidence) if switch.evidence is not None else None),
            )
            self._audit(db, audit)

    def clear_kill(self, scope: str, audit: AuditEntry) -> KillSwitch | None:
        try:
            with self._tx() as db:
                row = db.execute(
                    "DELETE FROM kill_switches WHERE scope = ? RETURNING scope, reason, actor, "
                    "at, evidence", (scope,),
                ).fetchone()
                if row is None:
                    raise _NothingToDo  # clearing nothing is not an event: roll back
                self._audit(db, audit)
        except _NothingToDo:
            return None
        return KillSwitch(row[0], row[1], row[2], row[3], json.loads(row[4]) if row[4] else None)

    @staticmethod
    def _audit(db: sqlite3.Connection, entry: AuditEntry) -> None:
        db.execute(
            "INSERT INTO audit (at, actor, action, target, reason, details) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (entry.at, entry.actor, entry.action, entry.target, entry.reason,
             json.dumps(entry.details, sort_keys=True)),
        )

    def record_audit(self, entry: AuditEntry) -> None:
        with self._tx() as db:
            self._audit(db, entry)

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        rows = self._query(
            "SELECT at, actor, action, target, reason, details FROM audit "
            "ORDER BY at DESC, id DESC LIMIT ?", (limit,),
        )
        return [
            AuditEntry(float(str(at)), str(actor), str(action), str(target), str(reason),
                       json.loads(str(details)))
            for at, actor, action, target, reason, details in rows
        ]

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)
                )
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"control store {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()
