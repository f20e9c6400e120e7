"""The state of the rollout as one JSON-ready dict: what `strangler status --json` prints
and what the dashboard shows (`GET /_strangler/api/status`).

Read from the control store only (rules, kill switches, the guardrail monitor's last
report, the shadow parity summary), so every replica and the CLI see the same figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from control.decision import is_killed
from control.operations import (
    CONFLICT_KEY,
    FILE_ERROR_KEY,
    last_import,
    rules_drift,
    watched_files,
)
from control.rules_loader import load_rules_text
from control.store import ControlStore
from guardrails.report import read_report
from shadow.report import read_summary
from shadow.spec import ShadowConfig


def status_data(store: ControlStore) -> dict[str, Any]:
    """Funnels with their rules, percentages, live split and verdicts; kill switches;
    the monitor's freshness; staged rollouts in progress."""
    active = store.active_rules()
    kills = store.kill_switches()
    report = read_report(store)
    traffic = report.get("traffic", {})
    verdicts = report.get("funnels", {})
    parity = shadow_summary(store).get("funnels", {})
    funnels: list[dict[str, Any]] = []
    if active is not None:
        rules = load_rules_text(active.text, str(active.version))
        for f in rules.funnels:
            judged = verdicts.get(f.name)
            funnels.append({
                "name": f.name,
                "killed": is_killed(kills.keys(), f.name),
                "rules": [{
                    "id": r.id,
                    "countries": sorted(r.countries) if r.countries is not None else "*",
                    "percent": r.basis_points / 100,
                } for r in f.rules],
                "live": traffic.get(f.name, {}),
                "guardrails": None if judged is None else {
                    "verdict": judged["verdict"],
                    "checks": {g["name"]: g["verdict"] for g in judged["guardrails"]},
                },
                # the shadow's configuration in sentences (the funnel's, then each rule
                # that changes it; empty: no shadow), and its units' parity when compared
                "shadow": {
                    "lines": f.shadow_lines(),
                    # per rule id: % of the units legacy serves whose cart building is
                    # replayed to the core (the rule's shadow, else the funnel's), or None
                    "percent_by_rule": {
                        r.id: _shadow_percent(r.shadow if r.shadow is not None else f.shadow)
                        for r in f.rules},
                    "units": (parity.get(f.name) or {}).get("units"),
                },
            })
    return {
        "rules_version": active.version if active else None,
        "rules_applied_at": active.applied_at if active else None,
        "rules_applied_by": active.actor if active else None,
        "funnels": funnels,
        "kill_switches": {s: {"reason": k.reason, "actor": k.actor, "at": k.at}
                          for s, k in kills.items()},
        "monitor": {"at": report.get("at"), "telemetry": report.get("telemetry")},
        "rules_files": rules_files(store),
        "rollouts": report.get("rollouts", []),
    }


def _shadow_percent(config: ShadowConfig | None) -> float | None:
    return None if config is None else config.percent


def shadow_summary(store: ControlStore) -> dict[str, Any]:
    """The shadow parity summary the proxy holding the monitor lease stores every tick
    (`shadow.report.summarize`, with its `at`); {} when none was ever stored, or it is
    unreadable."""
    try:
        summary = read_summary(store)
    except ValueError:
        return {}
    return summary if isinstance(summary, dict) else {}


def rules_files(store: ControlStore) -> list[dict[str, Any]]:
    """Each watched rules file: the version it was last imported as, where the active
    rules drifted from it (CLI ramps, rollouts: `strangler rules export` writes them back),
    the conflicts of an edit refused and the errors of an invalid file rejected (each
    null when there is none)."""
    conflict = _meta_json(store, CONFLICT_KEY)
    rejected = _meta_json(store, FILE_ERROR_KEY)
    paths = watched_files(store)
    if rejected and rejected.get("file") and rejected["file"] not in paths:
        paths.append(rejected["file"])  # rejected before it was ever imported
    out = []
    for path in paths:
        base = last_import(store, Path(path))
        out.append({
            "path": path, "imported_as_version": base.get("version") if base else None,
            "drift": rules_drift(store, Path(path)),
            "conflict": conflict if conflict and conflict.get("file") == path else None,
            "error": rejected["error"] if rejected and rejected.get("file") == path else None,
        })
    return out


def _meta_json(store: ControlStore, key: str) -> dict[str, Any] | None:
    raw = store.get_meta(key)
    data = json.loads(raw) if raw else None
    return data if isinstance(data, dict) else None
