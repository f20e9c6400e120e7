"""Three-way merge of a rules file edit on top of the active rules (control.merge)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from control.merge import drift, merge_rules

SAMPLE = yaml.safe_load((Path(__file__).resolve().parents[2] / "rules" / "checkout.yaml")
                        .read_text())


def edited(data: dict[str, Any], change: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    change(out)
    return out


def rule(data: dict[str, Any], funnel: str, rule_id: str) -> dict[str, Any]:
    f = next(f for f in data["funnels"] if f["name"] == funnel)
    return next(r for r in f["rules"] if r["id"] == rule_id)


def set_percent(funnel: str, rule_id: str, value: int) -> Any:
    return lambda d: rule(d, funnel, rule_id).__setitem__("percent", value)


def test_an_unrelated_edit_keeps_a_ramp_made_since_the_last_import() -> None:
    ours = edited(SAMPLE, set_percent("warranties", "warranties-pilot", 5))  # CLI ramp
    theirs = edited(SAMPLE, set_percent("warranties", "warranties-nordics", 10))
    result = merge_rules(SAMPLE, theirs, ours)
    assert result.conflicts == ()
    assert rule(result.data, "warranties", "warranties-pilot")["percent"] == 5
    assert rule(result.data, "warranties", "warranties-nordics")["percent"] == 10


def test_an_edit_of_a_rule_changed_since_the_import_is_a_named_conflict() -> None:
    ours = edited(SAMPLE, set_percent("warranties", "warranties-pilot", 5))
    theirs = edited(SAMPLE, set_percent("warranties", "warranties-pilot", 75))
    [conflict] = merge_rules(SAMPLE, theirs, ours).conflicts
    assert conflict.slot == "funnels[warranties].rules[warranties-pilot]"
    assert conflict.file_value["percent"] == 75 and conflict.active_value["percent"] == 5
    assert "the file says" in conflict.sentence()


def test_the_same_change_on_both_sides_is_no_conflict() -> None:
    both = edited(SAMPLE, set_percent("warranties", "warranties-pilot", 5))
    result = merge_rules(SAMPLE, both, both)
    assert result.conflicts == () and result.data == both


def test_an_edit_alone_applies_as_the_file_says() -> None:
    theirs = edited(SAMPLE, set_percent("warranties", "warranties-pilot", 75))
    assert merge_rules(SAMPLE, theirs, SAMPLE).data == theirs


def test_a_rule_added_by_the_file_lands_after_its_predecessor_beside_a_cli_rule() -> None:
    def cli_rule(d: dict[str, Any]) -> None:  # ramp --country DE inserts first
        d["funnels"][0]["rules"].insert(0, {"id": "warranties-de", "countries": ["DE"],
                                            "percent": 1})

    def file_rule(d: dict[str, Any]) -> None:
        d["funnels"][0]["rules"].insert(1, {"id": "warranties-nl", "countries": ["NL"],
                                            "percent": 3})

    result = merge_rules(SAMPLE, edited(SAMPLE, file_rule), edited(SAMPLE, cli_rule))
    ids = [r["id"] for r in result.data["funnels"][0]["rules"]]
    assert result.conflicts == ()
    assert ids[:3] == ["warranties-de", "warranties-pilot", "warranties-nl"]
    assert ids[-1] == "warranties-rest"


def test_a_rule_removed_by_the_file_goes_unless_it_was_changed_since() -> None:
    def remove(d: dict[str, Any]) -> None:
        d["funnels"][0]["rules"] = [r for r in d["funnels"][0]["rules"]
                                    if r["id"] != "warranties-nordics"]

    assert "warranties-nordics" not in str(merge_rules(SAMPLE, edited(SAMPLE, remove),
                                                       SAMPLE).data)
    ramped = edited(SAMPLE, set_percent("warranties", "warranties-nordics", 20))
    [conflict] = merge_rules(SAMPLE, edited(SAMPLE, remove), ramped).conflicts
    assert conflict.file_value is not None and "absent" in conflict.sentence()


@pytest.mark.parametrize("key", ["salt", "match"])
def test_funnel_fields_merge_one_by_one(key: str) -> None:
    theirs = edited(SAMPLE, lambda d: d["funnels"][0].__setitem__(key, "changed"))
    ours = edited(SAMPLE, set_percent("warranties", "warranties-pilot", 5))
    result = merge_rules(SAMPLE, theirs, ours)
    assert result.data["funnels"][0][key] == "changed"
    assert rule(result.data, "warranties", "warranties-pilot")["percent"] == 5


def test_drift_names_the_slots_the_active_rules_changed() -> None:
    ours = edited(SAMPLE, set_percent("warranties", "warranties-pilot", 5))
    assert drift(SAMPLE, ours) == ["funnels[warranties].rules[warranties-pilot]"]
    assert drift(SAMPLE, SAMPLE) == []
