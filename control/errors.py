"""Errors of the control plane that the operator can fix: refused operations and invalid
rules (each problem with file, line and field). Light: the CLI catches them without loading
the rules parser."""

from __future__ import annotations

from dataclasses import dataclass


class ControlError(Exception):
    """An operation the store refused for a reason the operator can fix."""


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
