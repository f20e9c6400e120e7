"""Errors of the control plane that the operator can fix: refused operations and invalid
rules (each problem with file, line and field). Light: the CLI catches them without loading
the rules parser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ControlError(Exception):
    """An operation the store refused for a reason the operator can fix."""


class RulesConflict(ControlError):
    """An edit of the rules file touches rules changed since the file was last imported
    (a ramp, a rollout step): refused until resolved. `conflicts` are control.merge
    Conflicts: slot, the file's value, the active value."""

    def __init__(self, source: str, conflicts: tuple[Any, ...]) -> None:
        self.source = source
        self.conflicts = conflicts
        super().__init__(f"{source}: the edit conflicts with changes made since the last "
                         "import; nothing was applied:\n" + "\n".join(
                             f"  {c.sentence()}" for c in conflicts))


Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class RuleIssue:
    source: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.field or '(file)'}: {self.message}"


class RulesError(ValueError):
    """The rules could not be loaded; `issues` says where and why."""

    def __init__(self, issues: list[RuleIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))
