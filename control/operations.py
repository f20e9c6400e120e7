"""Control-plane operations on rules shared by the CLI and the proxy: apply, import, ramp,
read state (kill switches: `control.killswitch`, re-exported here).

Each operation validates first, writes the store in one step, and records who, when and why.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from control.errors import ControlError, RulesError
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


def import_rules_file(store: ControlStore, path: Path, *, actor: str) -> RulesVersion | None:
    """Apply the file if its content changed since it was last imported; else do nothing.

    Raises RulesError when the file is invalid (the active rules stay as they are).
    """
    text = path.read_text(encoding="utf-8")
    digest = rules_digest(text)
    key = f"file:{path.resolve()}"
    if store.get_meta(key) == digest:
        return None
    active = store.active_rules()
    if active is not None and active.digest == digest:
        store.set_meta(key, digest)
        return None
    record = apply_rules_text(
        store, text, source=str(path), actor=actor, reason=f"rules file {path.name} changed",
        expected_version=active.version if active else None,
    )
    store.set_meta(key, digest)
    return record


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
        suffix = country.lower() if country else "all"
        target = {"id": f"{funnel}-{suffix}", "countries": wanted, "percent": value}
        rules.insert(0, target) if country else rules.append(target)
        before = "no rule"
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
    "ControlError", "ControlSnapshot", "apply_rules_text", "import_rules_file", "kill", "ramp",
    "ramp_text", "read_snapshot", "snapshot_of", "unkill",
]
