"""The control store: rules versions, kill switches and the audit log.

Two adapters share one port: SQLite (embedded default) and Redis (distributed mode).
"""

from __future__ import annotations

from control.store.base import (
    AuditEntry,
    ControlStore,
    KillSwitch,
    RulesVersion,
    StoreUnavailable,
    VersionConflict,
)


def open_store(redis_url: str | None, db_path: str) -> ControlStore:
    """The store the settings ask for: Redis when a URL is given, else the SQLite file."""
    if redis_url:
        from control.store.redis_store import RedisControlStore

        return RedisControlStore(redis_url)
    from control.store.sqlite_store import SqliteControlStore

    return SqliteControlStore(db_path)


__all__ = [
    "AuditEntry", "ControlStore", "KillSwitch", "RulesVersion", "StoreUnavailable",
    "VersionConflict", "open_store",
]
