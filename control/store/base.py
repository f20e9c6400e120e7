"""Records and the port of the control store."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


class StoreError(Exception):
    """Base of the store's errors."""


class StoreUnavailable(StoreError):
    """The store could not be reached or answered with an error."""


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
