"""Control store in a SQLite file: the embedded default.

Several processes (proxy replicas, the CLI) may share the file: writes take an immediate
transaction, so a compare-and-set apply cannot lose an update.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from control.store.base import (
    AuditEntry,
    KillSwitch,
    RulesVersion,
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


class SqliteControlStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                self.path, timeout=10, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open control store {self.path}: {exc}") from exc

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
        with self._tx() as db:
            row = db.execute(
                "DELETE FROM kill_switches WHERE scope = ? RETURNING scope, reason, actor, at, "
                "evidence", (scope,),
            ).fetchone()
            self._audit(db, audit)
        if row is None:
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
            "ORDER BY id DESC LIMIT ?", (limit,),
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
