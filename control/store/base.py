"""Records and the port of the control store."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


class StoreError(Exception):
    """Base of the store's errors."""


class StoreUnavailable(StoreError):
    """The store could not be reached or answered with an error."""


class StoreMissing(StoreUnavailable):
    """There is no control store where the caller looked (and it must not create one)."""


class StoreLost(StoreUnavailable):
    """The store the caller was reading is gone or is another one now: a SQLite file
    deleted or replaced, a Redis that came back empty. Its identity says which."""


class VersionConflict(StoreError):
    """A compare-and-set lost: the active version is not the one the caller expected."""

    def __init__(self, expected: int | None, actual: int | None) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"rules changed concurrently: expected version {expected}, found {actual}"
        )


@dataclass(frozen=True, slots=True)
class RulesVersion:
    version: int
    text: str
    digest: str
    applied_at: float
    actor: str
    reason: str
    source: str

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        del data["text"]
        return data


@dataclass(frozen=True, slots=True)
class KillSwitch:
    scope: str  # "*" for global, else a funnel name
    reason: str
    actor: str
    at: float
    evidence: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StoreIdentity:
    """Which store this is. `generation` is minted when a store is created (or restored);
    `restored_from` names the generation a restore carried the state over from, so that
    replicas which knew that one accept the restored store as the same lineage."""

    generation: str
    created_at: float
    restored_from: str | None = None

    def continues(self, known: str) -> bool:
        return known in (self.generation, self.restored_from)


@dataclass(frozen=True, slots=True)
class RestoreState:
    """What a restore writes into an empty store: the last known rules version (with its
    number), the kill switches, the audit entries seen, and the new identity."""

    identity: StoreIdentity
    rules: RulesVersion | None
    kills: tuple[KillSwitch, ...]
    audit: tuple[AuditEntry, ...]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: float
    actor: str
    action: str
    target: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


class ControlStore(Protocol):
    """What every control store adapter offers. All methods are synchronous and short."""

    def epoch(self) -> int:
        """A counter that changes on every write; replicas poll it cheaply."""

    def identity(self) -> StoreIdentity | None:
        """This store's identity, None for a store that holds none (new, or lost its data).
        Raises StoreLost when the store read so far is gone (SQLite file deleted or
        replaced)."""

    def initialize(self) -> StoreIdentity:
        """Give an empty store an identity (no-op returning the existing one)."""

    def restore(self, state: RestoreState) -> None:
        """Write `state` into a store without identity, in one step; kill switches already
        in the store stay (kills win). Raises StoreError if the store has an identity."""

    def durability(self) -> str | None:
        """None when the store keeps its data across restarts; else why it may not."""

    def reconnect(self) -> None:
        """Open the store at its location again (after StoreLost); a no-op where the
        location cannot change under the store (Redis)."""

    def active_rules(self) -> RulesVersion | None: ...

    def rules_version(self, version: int) -> RulesVersion | None: ...

    def rules_history(self, limit: int = 50) -> list[RulesVersion]: ...

    def apply_rules(
        self, text: str, digest: str, *, expected_version: int | None, actor: str, reason: str,
        source: str, audit: AuditEntry,
    ) -> RulesVersion:
        """Store a new active version if the active one is `expected_version` (else raise
        VersionConflict); the audit entry is written in the same transaction."""

    def kill_switches(self) -> dict[str, KillSwitch]: ...

    def set_kill(self, switch: KillSwitch, audit: AuditEntry) -> None: ...

    def clear_kill(self, scope: str, audit: AuditEntry) -> KillSwitch | None: ...

    def record_audit(self, entry: AuditEntry) -> None: ...

    def audit_log(self, limit: int = 100) -> list[AuditEntry]: ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def close(self) -> None: ...
