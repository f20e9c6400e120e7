"""Control-plane operations on rules shared by the CLI and the proxy: apply, import, ramp,
read state (kill switches: `control.killswitch`, re-exported here).

Each operation validates first, writes the store in one step, and records who, when and why.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from control.errors import ControlError, RulesConflict, RulesError
from control.killswitch import kill, unkill
from control.rules import RuleSet
from control.rules_loader import load_rules_text, parse_rules, rules_digest
from control.store import AuditEntry, ControlStore, RulesVersion

log = logging.getLogger("strangler.control")


@dataclass(frozen=True, slots=True)
class ControlSnapshot:
    """What a replica routes with: the last good rules and the kill switches."""

    epoch: int
    rules: RuleSet | None
    kills: frozenset[str]
    rules_error: str | None = None


def apply_rules_text(
    store: ControlStore, text: str, *, source: str, actor: str, reason: str,
    expected_version: int | str | None = "active",
) -> RulesVersion:
    """Validate and store rules as the new active version (compare-and-set).

    `expected_version="active"` reads the active version first; pass an explicit version
    (or None for "no rules yet") to fail with VersionConflict when someone else applied.
    """
    parse_rules(text, source)
    if expected_version == "active":
        active = store.active_rules()
        expected_version = active.version if active else None
    assert not isinstance(expected_version, str)
    digest = rules_digest(text)
    audit = AuditEntry(time.time(), actor, "rules.apply", source, reason, {"digest": digest})
    record = store.apply_rules(
        text, digest, expected_version=expected_version, actor=actor, reason=reason,
        source=source, audit=audit,
    )
    log.info("rules version %s applied by %s from %s: %s", record.version, actor, source, reason)
    return record


FILES_KEY = "rules-files"  # the watched files' paths (JSON list), for status
CONFLICT_KEY = "rules-file-conflict"  # the refused edit's conflicts (JSON), or ""
FILE_ERROR_KEY = "rules-file-error"  # the rejected (invalid) file's errors (JSON), or ""


def _file_key(path: Path) -> str:
    return f"rules-file:{path.resolve()}"


def last_import(store: ControlStore, path: Path) -> dict[str, Any] | None:
    """What the file said when it was last imported: {digest, text, version, at}."""
    raw = store.get_meta(_file_key(path))
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        return None
    return data if isinstance(data, dict) and "text" in data else None


def watched_files(store: ControlStore) -> list[str]:
    raw = store.get_meta(FILES_KEY)
    return list(json.loads(raw)) if raw else []


def _remember_import(store: ControlStore, path: Path, text: str, version: int | None) -> None:
    store.set_meta(_file_key(path), json.dumps({
        "digest": rules_digest(text), "text": text, "version": version, "at": time.time()}))
    files = watched_files(store)
    if str(path.resolve()) not in files:
        store.set_meta(FILES_KEY, json.dumps([*files, str(path.resolve())]))


def import_rules_file(store: ControlStore, path: Path, *, actor: str) -> RulesVersion | None:
    """Apply an edit of the rules file on top of the active rules; None when nothing
    changed (control.merge says how: the change from the last imported file to this one is
    applied, so CLI ramps and rollouts of rules the edit did not touch stay).

    Raises RulesError when the file is invalid and RulesConflict when the edit touches a
    rule that changed since the last import (the active rules stay as they are in both).
    """
    text = path.read_text(encoding="utf-8")
    digest = rules_digest(text)
    base = last_import(store, path)
    if base is not None and base["digest"] == digest:
        return None
    parse_rules(text, str(path))  # errors name the file's own lines
    active = store.active_rules()
    merged = text if base is None or active is None else _merged(base["text"], text, active,
                                                                 path)
    if active is not None and (active.digest == rules_digest(merged) or (
            yaml.safe_load(merged) == yaml.safe_load(active.text))):
        _remember_import(store, path, text, active.version)
        return None
    record = apply_rules_text(
        store, merged, source=str(path), actor=actor,
        reason=f"rules file {path.name} changed" + (" (merged on top of the active rules)"
                                                    if merged != text else ""),
        expected_version=active.version if active else None,
    )
    _remember_import(store, path, text, record.version)
    return record


def _merged(base_text: str, text: str, active: RulesVersion, path: Path) -> str:
    from control.merge import merge_rules

    theirs = yaml.safe_load(text)
    result = merge_rules(yaml.safe_load(base_text), theirs, yaml.safe_load(active.text))
    if result.conflicts:
        raise RulesConflict(str(path), result.conflicts)
    return text if result.data == theirs else yaml.safe_dump(result.data, sort_keys=False)


def rules_drift(store: ControlStore, path: Path) -> list[str]:
    """Where the active rules differ from what the file said when last imported."""
    from control.merge import drift

    base, active = last_import(store, path), store.active_rules()
    if base is None or active is None:
        return []
    return drift(yaml.safe_load(base["text"]), yaml.safe_load(active.text))


def read_snapshot(store: ControlStore, previous: ControlSnapshot | None = None) -> ControlSnapshot:
    """Read the state; keep the previous rules when the stored ones are invalid."""
    epoch = store.epoch()
    kills = frozenset(store.kill_switches())
    return snapshot_of(epoch, store.active_rules(), kills, previous)


def snapshot_of(
    epoch: int, active: RulesVersion | None, kills: frozenset[str],
    previous: ControlSnapshot | None = None,
) -> ControlSnapshot:
    """The snapshot for what was read; the previous rules are reused when the version is
    the same, and kept when the stored ones are invalid."""
    if active is None:
        return ControlSnapshot(epoch, None, kills, "no rules have been applied")
    if previous is not None and previous.rules is not None and (
        previous.rules.version == str(active.version)
    ):
        return ControlSnapshot(epoch, previous.rules, kills)
    try:
        rules = load_rules_text(active.text, str(active.version), f"store version {active.version}")
    except RulesError as exc:
        log.error("stored rules version %s are invalid, keeping the last good: %s",
                  active.version, exc)
        kept = previous.rules if previous is not None else None
        return ControlSnapshot(epoch, kept, kills, str(exc))
    return ControlSnapshot(epoch, rules, kills)


def _percent_value(percent: Decimal) -> int | float:
    return int(percent) if percent == percent.to_integral_value() else float(percent)


def ramp_text(text: str, funnel: str, country: str | None, percent: Decimal) -> tuple[str, str]:
    """New rules text with one percentage changed, and a sentence saying what changed.

    With a country: the rule that lists only that country, created first in the funnel if
    missing. Without: the funnel's catch-all ('*') rule, appended if missing.
    """
    data = yaml.safe_load(text)
    funnels = [f for f in data.get("funnels", []) if f.get("name") == funnel]
    if not funnels:
        raise ControlError(f"no funnel named {funnel!r}")
    rules: list[dict[str, Any]] = funnels[0].setdefault("rules", [])
    wanted: list[str] | str = [country] if country else "*"
    target = next((r for r in rules if r.get("countries") == wanted), None)
    value = _percent_value(percent)
    if target is None:
        covering = next((r for r in rules if r.get("countries") == "*" or (
            country and country in (r.get("countries") or []))), None)
        before = (f"{covering['percent']}% (by rule {covering['id']})" if covering is not None
                  else "no rule (legacy)")
        suffix = country.lower() if country else "all"
        target = {"id": f"{funnel}-{suffix}", "countries": wanted, "percent": value}
        rules.insert(0, target) if country else rules.append(target)
    else:
        before = f"{target['percent']}%"
        target["percent"] = value
    where = country or "all countries"
    sentence = f"{funnel} / {where}: {before} -> {value}% (rule {target['id']})"
    return yaml.safe_dump(data, sort_keys=False), sentence


def ramp(
    store: ControlStore, funnel: str, country: str | None, percent: Decimal, *,
    actor: str, reason: str,
) -> tuple[RulesVersion, str]:
    if not reason.strip():
        raise ControlError("a reason is required")
    active = store.active_rules()
    if active is None:
        raise ControlError("no rules are active: apply a rules file first")
    text, sentence = ramp_text(active.text, funnel, country, percent)
    record = apply_rules_text(
        store, text, source=f"ramp {funnel}", actor=actor, reason=f"{reason} ({sentence})",
        expected_version=active.version,
    )
    return record, sentence


__all__ = [
    "CONFLICT_KEY",
    "FILES_KEY",
    "FILE_ERROR_KEY",
    "ControlError",
    "ControlSnapshot",
    "apply_rules_text",
    "import_rules_file",
    "kill",
    "last_import",
    "ramp",
    "ramp_text",
    "read_snapshot",
    "rules_drift",
    "snapshot_of",
    "unkill",
    "watched_files",
]
