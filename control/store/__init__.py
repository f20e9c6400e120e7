"""The control store: rules versions, kill switches and the audit log.

Two adapters share one port: SQLite (embedded default) and Redis (distributed mode).
"""

from __future__ import annotations

from control.store.base import (
    AuditEntry,
    ControlStore,
    KillSwitch,
    RestoreState,
    RulesVersion,
    StoreIdentity,
    StoreLost,
    StoreMissing,
    StoreUnavailable,
    VersionConflict,
)


def open_store(
    redis_url: str | None, db_path: str, *, create: bool = True, initialize: bool = True,
) -> ControlStore:
    """The store the settings ask for: Redis when a URL is given, else the SQLite file.

    With `create=False` (the CLI) a SQLite file that does not exist raises StoreMissing
    instead of being created: a command run from the wrong directory must not write to a
    new, empty store that no proxy reads. A new SQLite file gets its identity at once unless
    `initialize=False` (the proxy: its watcher decides whether the empty store is new or a
    lost one to restore).
    """
    if redis_url:
        from control.store.redis_store import RedisControlStore

        return RedisControlStore(redis_url)
    from control.store.sqlite_store import SqliteControlStore

    return SqliteControlStore(db_path, create=create, initialize=initialize)


__all__ = [
    "AuditEntry", "ControlStore", "KillSwitch", "RestoreState", "RulesVersion",
    "StoreIdentity", "StoreLost", "StoreMissing", "StoreUnavailable", "VersionConflict",
    "open_store",
]
