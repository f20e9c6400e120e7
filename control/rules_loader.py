"""Load rules YAML: parse with line numbers, validate with pydantic, compile.

Every problem is reported as ``FILE:LINE: FIELD: MESSAGE`` so that a release manager can go
straight to it. Loading never returns half-valid rules: it returns a RuleSet or raises
RulesError with every problem found.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from control.errors import Loc, RuleIssue, RulesError
from control.rules import RuleSet, compile_rules
from control.rules_schema import RulesFile

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
MAX_NODES = 100_000  # a rules file has a few thousand; aliases must not multiply them


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        name = part if _PLAIN_KEY.match(part) else repr(part)  # '' and '[' stay visible
        out += f".{name}" if out else name
    return out


class _LineMap:
    """Plain Python values from a YAML node tree, remembering the line of every path."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[Loc, int] = {}
        self.issues: list[RuleIssue] = []
        self.nodes = 0
        self._scalars = yaml.constructor.SafeConstructor()

    def build(self, node: yaml.Node, loc: Loc = ()) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise RulesError([RuleIssue(
                self.source, node.start_mark.line + 1, format_loc(loc),
                f"more than {MAX_NODES} values (aliases expanding without bound?)",
            )])
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, loc)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
        return self._scalars.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self._issue(key_node, loc, "merge keys (<<) are not supported: repeat the keys "
                            "or use an alias for the whole value")
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self._issue(key_node, loc, "keys must be plain scalars")
                continue
            key = self._scalars.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) or key is None:
                self._issue(key_node, loc, "keys must be plain scalars")
                continue
            key = str(key)
            child = (*loc, key)
            if key in result:
                self._issue(key_node, child, "duplicate key")
                continue
            self.lines[child] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, child)
        return result

    def _issue(self, node: yaml.Node, loc: Loc, message: str) -> None:
        self.issues.append(
            RuleIssue(self.source, node.start_mark.line + 1, format_loc(loc), message)
        )

    def line_of(self, loc: Loc) -> int | None:
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get(())


def _parse(text: str, source: str) -> tuple[Any, _LineMap]:
    lines = _LineMap(source)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise RulesError([RuleIssue(source, None, "", "invalid YAML: nested too deeply")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise RulesError([RuleIssue(source, line, "", f"invalid YAML: {problem}")]) from exc
    if node is None:
        raise RulesError([RuleIssue(source, 1, "", "the file is empty")])
    try:
        data = lines.build(node)
    except yaml.YAMLError as exc:  # an unknown or unsafe tag, say
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise RulesError([RuleIssue(source, line, "", f"invalid YAML: {problem}")]) from None
    except RecursionError:
        problem = "invalid YAML: nested too deeply (or a recursive alias)"
        raise RulesError([RuleIssue(source, None, "", problem)]) from None
    if lines.issues:
        raise RulesError(lines.issues)
    if not isinstance(data, dict):
        raise RulesError([RuleIssue(source, 1, "", "the top level must be a mapping")])
    return data, lines


def _pydantic_issues(exc: ValidationError, lines: _LineMap) -> list[RuleIssue]:
    errors = exc.errors()
    locs = [_user_loc(e["loc"]) for e in errors]

    def member_tag(part: Any) -> bool:
        return isinstance(part, str) and "[" in part

    def shadowed(i: int) -> bool:
        # A union such as `list[...] | '*'` reports one error per member: keep the deeper one
        # (an error inside the list says more than "or it should have been '*'").
        if errors[i]["type"] != "literal_error":
            return False
        base = locs[i][:-1] if locs[i] and member_tag(locs[i][-1]) else locs[i]
        return any(
            j != i and len(other) > len(base) and other[: len(base)] == base
            and not (len(other) == len(base) + 1 and member_tag(other[-1]))
            for j, other in enumerate(locs)
        )

    issues = []
    for i, err in enumerate(errors):
        if shadowed(i):
            continue
        loc = locs[i]
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        issues.append(RuleIssue(lines.source, lines.line_of(loc), format_loc(loc), message))
    return issues


def _user_loc(raw: tuple[Any, ...]) -> Loc:
    """The loc of the user's data: pydantic inserts union members' type names ('list[...]',
    "literal['*']") between parts, and '[key]' after a mapping key that is invalid; a
    user's own key can only be the last part."""
    parts = [p for p in raw if isinstance(p, str | int)]
    if parts and parts[-1] == "[key]":  # a mapping's key is invalid: name the key itself
        parts.pop()
    return tuple(p for i, p in enumerate(parts)
                 if not (isinstance(p, str) and "[" in p and i < len(parts) - 1))


def _semantic_issues(spec: RulesFile, lines: _LineMap) -> list[RuleIssue]:
    """Checks that span several entries: duplicates and ambiguous matches."""
    issues: list[RuleIssue] = []

    def dup(values: list[tuple[Loc, str | None]], what: str) -> None:
        first: dict[str, Loc] = {}
        for loc, value in values:
            if value is None:
                continue
            if value not in first:
                first[value] = loc
                continue
            issues.append(RuleIssue(
                lines.source, lines.line_of(loc), format_loc(loc),
                f"duplicate {what} {value!r} (first at line {lines.line_of(first[value])})",
            ))

    dup([(("funnels", i, "name"), f.name) for i, f in enumerate(spec.funnels)], "funnel")
    dup([(("funnels", i, "match", "header"), f.match.header)
         for i, f in enumerate(spec.funnels)], "funnel header value")
    dup([(("funnels", i, "match", "path_prefix"), f.match.path_prefix)
         for i, f in enumerate(spec.funnels)], "funnel path prefix")
    dup([(("funnels", i, "rules", j, "id"), r.id)
         for i, f in enumerate(spec.funnels) for j, r in enumerate(f.rules)], "rule id")
    for i, funnel in enumerate(spec.funnels):
        if funnel.match.header is None and funnel.match.path_prefix is None:
            loc: Loc = ("funnels", i, "match")
            issues.append(RuleIssue(lines.source, lines.line_of(loc), format_loc(loc),
                                    "a funnel matches by 'header', 'path_prefix' or both"))
        for j, rule in enumerate(funnel.rules):
            if funnel.shadow is None and rule.shadow is not None and rule.shadow.share is None:
                loc = ("funnels", i, "rules", j, "shadow")
                issues.append(RuleIssue(
                    lines.source, lines.line_of(loc), format_loc(loc),
                    "a rule's shadow needs a share when its funnel has no shadow section"))
            if isinstance(rule.countries, list):
                dup([(("funnels", i, "rules", j, "countries", k), c)
                     for k, c in enumerate(rule.countries)], "country")
    return issues


def rules_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def parse_rules(text: str, source: str = "<rules>") -> RulesFile:
    """Validate rules text; raise RulesError naming file, line and field on any problem."""
    data, lines = _parse(text, source)
    try:
        spec = RulesFile.model_validate(data)
    except ValidationError as exc:
        raise RulesError(_pydantic_issues(exc, lines)) from None
    issues = _semantic_issues(spec, lines)
    if issues:
        raise RulesError(issues)
    return spec


def load_rules_text(text: str, version: str, source: str = "<rules>") -> RuleSet:
    return compile_rules(parse_rules(text, source), version)


def load_rules_file(path: Path, version: str | None = None) -> RuleSet:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError([RuleIssue(str(path), None, "", f"cannot read: {exc}")]) from exc
    return load_rules_text(text, version or f"file-{rules_digest(text)}", str(path))


__all__ = [
    "RuleIssue", "RulesError", "format_loc", "load_rules_file", "load_rules_text", "parse_rules",
    "rules_digest",
]
