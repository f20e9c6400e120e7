"""control.operations against a real SQLite control store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from control import operations as control
from control.operations import ControlError
from control.rules_loader import RulesError, load_rules_text, rules_digest
from control.store import AuditEntry, RulesVersion, VersionConflict
from control.store.sqlite_store import SqliteControlStore

SAMPLE = Path(__file__).resolve().parents[2] / "rules" / "checkout.yaml"

RULES = """\
schema: 1
funnels:
  - name: warranties
    match: {header: warranties}
    salt: w1
    rules:
      - id: pilot
        countries: [IE, PT]
        percent: 50
      - id: rest
        countries: '*'
        percent: 0
  - name: accessories
    match: {header: accessories}
    salt: a1
    rules:
      - id: accessories-ie
        countries: [IE]
        percent: 10
"""

INVALID = RULES.replace("percent: 50", "percent: 150")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteControlStore]:
    store = SqliteControlStore(tmp_path / "control.sqlite3")
    yield store
    store.close()


@pytest.fixture
def apply(store: SqliteControlStore) -> Callable[..., RulesVersion]:
    """Apply rules text on top of the active version."""

    def apply_text(text: str = RULES, *, actor: str = "alice", reason: str = "setup",
                   expected_version: int | None | str = "active") -> RulesVersion:
        return control.apply_rules_text(store, text, source="test", actor=actor, reason=reason,
                                        expected_version=expected_version)

    return apply_text


@pytest.fixture
def rules_file(tmp_path: Path) -> Callable[[str], Path]:
    path = tmp_path / "rules.yaml"

    def write(text: str) -> Path:
        path.write_text(text, encoding="utf-8")
        return path

    return write


def active_ruleset(store: SqliteControlStore):
    active = store.active_rules()
    assert active is not None
    return load_rules_text(active.text, str(active.version))


# --- apply_rules_text -------------------------------------------------------------------


def test_apply_rules_text_stores_a_version_with_digest_and_audit(store, apply):
    record = apply(RULES, actor="alice", reason="pilot IE")
    assert store.active_rules() == record
    assert record.digest == rules_digest(RULES)
    entry = store.audit_log()[0]
    assert (entry.action, entry.actor, entry.reason) == ("rules.apply", "alice", "pilot IE")
    assert entry.details == {"digest": record.digest}


@pytest.mark.parametrize(
    "text",
    [INVALID, "funnels: [", "", RULES.replace("salt: w1", "salt: w1\n    colour: red")],
    ids=["percent-150", "invalid-yaml", "empty", "unknown-key"],
)
def test_apply_rules_text_rejects_invalid_rules_and_stores_nothing(store, apply, text):
    first = apply(RULES)
    epoch = store.epoch()
    with pytest.raises(RulesError):
        apply(text)
    assert store.active_rules() == first
    assert len(store.rules_history()) == 1
    assert len(store.audit_log()) == 1
    assert store.epoch() == epoch


def test_apply_rules_text_with_a_stale_expected_version_raises_version_conflict(store, apply):
    first = apply(RULES)
    apply(RULES.replace("percent: 50", "percent: 60"))
    with pytest.raises(VersionConflict):
        apply(RULES, expected_version=first.version)


# --- import_rules_file ------------------------------------------------------------------


def test_import_rules_file_applies_only_when_the_content_changed(store, rules_file):
    path = rules_file(RULES)
    first = control.import_rules_file(store, path, actor="proxy")
    assert first is not None and first.source == str(path)
    assert control.import_rules_file(store, path, actor="proxy") is None
    assert store.active_rules() == first
    changed = control.import_rules_file(store, rules_file(RULES.replace("50", "60")), actor="p")
    assert changed is not None and changed.version > first.version
    assert store.active_rules() == changed


def test_import_rules_file_is_a_no_op_when_the_active_rules_already_have_that_content(
    store, apply, rules_file
):
    record = apply(RULES)
    assert control.import_rules_file(store, rules_file(RULES), actor="proxy") is None
    assert store.active_rules() == record


def test_import_rules_file_does_not_undo_a_ramp_when_the_file_is_unchanged(store, rules_file):
    path = rules_file(RULES)
    control.import_rules_file(store, path, actor="proxy")
    ramped, _ = control.ramp(store, "warranties", "IE", Decimal(75), actor="a", reason="go")
    assert control.import_rules_file(store, path, actor="proxy") is None
    assert store.active_rules() == ramped


def test_import_of_an_invalid_file_raises_and_keeps_the_active_version(store, rules_file):
    first = control.import_rules_file(store, rules_file(RULES), actor="proxy")
    with pytest.raises(RulesError) as info:
        control.import_rules_file(store, rules_file(INVALID), actor="proxy")
    assert "funnels[0].rules[0].percent" in str(info.value)
    assert store.active_rules() == first
    # Still invalid on the next poll: it raises again rather than being remembered as seen.
    with pytest.raises(RulesError):
        control.import_rules_file(store, rules_file(INVALID), actor="proxy")


# --- read_snapshot ----------------------------------------------------------------------


def test_read_snapshot_without_rules_has_no_rules_and_says_why(store):
    snapshot = control.read_snapshot(store)
    assert snapshot.rules is None
    assert snapshot.rules_error == "no rules have been applied"
    assert snapshot.epoch == store.epoch()


def test_read_snapshot_compiles_the_active_rules_and_lists_kill_switches(store, apply):
    record = apply(RULES)
    control.kill(store, "warranties", actor="bob", reason="INC-1")
    snapshot = control.read_snapshot(store)
    assert snapshot.rules is not None
    assert snapshot.rules.version == str(record.version)
    assert snapshot.kills == frozenset({"warranties"})
    assert snapshot.rules_error is None


def test_read_snapshot_reuses_the_previous_rules_when_the_version_is_unchanged(store, apply):
    apply(RULES)
    previous = control.read_snapshot(store)
    control.kill(store, None, actor="bob", reason="INC-1")
    snapshot = control.read_snapshot(store, previous)
    assert snapshot.rules is previous.rules
    assert snapshot.kills == frozenset({"*"})
    assert snapshot.epoch > previous.epoch


def write_invalid_version(store: SqliteControlStore, text: str = INVALID) -> RulesVersion:
    active = store.active_rules()
    return store.apply_rules(
        text, rules_digest(text), expected_version=active.version if active else None,
        actor="mallory", reason="bypassed validation", source="raw",
        audit=AuditEntry(0.0, "mallory", "rules.apply", "raw", "bypassed validation"),
    )


def test_read_snapshot_keeps_the_previous_good_rules_when_the_stored_text_is_invalid(
    store, apply
):
    good = apply(RULES)
    previous = control.read_snapshot(store)
    bad = write_invalid_version(store)
    snapshot = control.read_snapshot(store, previous)
    assert snapshot.rules is previous.rules
    assert snapshot.rules.version == str(good.version)
    assert snapshot.rules_error is not None
    assert f"store version {bad.version}" in snapshot.rules_error
    assert "percent" in snapshot.rules_error
    assert snapshot.epoch == store.epoch()


def test_read_snapshot_of_invalid_stored_text_without_previous_has_no_rules(store):
    write_invalid_version(store, "funnels: [")
    snapshot = control.read_snapshot(store)
    assert snapshot.rules is None
    assert snapshot.rules_error is not None and "invalid YAML" in snapshot.rules_error


# --- ramp -------------------------------------------------------------------------------


def test_ramp_with_a_country_creates_a_country_rule_first_in_the_funnel(store, apply):
    apply(RULES)
    record, sentence = control.ramp(
        store, "warranties", "DE", Decimal("12.5"), actor="alice", reason="guardrails green"
    )
    funnel = active_ruleset(store).funnel("warranties")
    assert [r.id for r in funnel.rules] == ["warranties-de", "pilot", "rest"]
    assert funnel.rules[0].countries == frozenset({"DE"})
    assert funnel.rule_for("DE").basis_points == 1250
    assert funnel.rule_for("IE").basis_points == 5000
    assert sentence == "warranties / DE: 0% (by rule rest) -> 12.5% (rule warranties-de)"
    assert record.reason == f"guardrails green ({sentence})"
    assert record.actor == "alice"


def test_ramp_with_a_country_edits_the_rule_that_lists_only_that_country(store, apply):
    apply(RULES)
    _, sentence = control.ramp(store, "accessories", "IE", Decimal(25), actor="a", reason="go")
    funnel = active_ruleset(store).funnel("accessories")
    assert [(r.id, r.basis_points) for r in funnel.rules] == [("accessories-ie", 2500)]
    assert sentence == "accessories / IE: 10% -> 25% (rule accessories-ie)"


def test_ramping_a_created_country_rule_again_edits_it(store, apply):
    apply(RULES)
    control.ramp(store, "warranties", "DE", Decimal(5), actor="a", reason="start")
    control.ramp(store, "warranties", "DE", Decimal(20), actor="a", reason="more")
    funnel = active_ruleset(store).funnel("warranties")
    assert [(r.id, r.basis_points) for r in funnel.rules] == [
        ("warranties-de", 2000), ("pilot", 5000), ("rest", 0),
    ]


def test_ramp_without_a_country_edits_the_catch_all_rule(store, apply):
    apply(RULES)
    control.ramp(store, "warranties", None, Decimal("0.01"), actor="a", reason="canary")
    funnel = active_ruleset(store).funnel("warranties")
    assert [(r.id, r.basis_points) for r in funnel.rules] == [("pilot", 5000), ("rest", 1)]
    assert funnel.rule_for("US").basis_points == 1


def test_ramp_without_a_country_appends_a_catch_all_rule_when_missing(store, apply):
    apply(RULES)
    control.ramp(store, "accessories", None, Decimal(1), actor="a", reason="canary")
    funnel = active_ruleset(store).funnel("accessories")
    assert [(r.id, r.countries, r.basis_points) for r in funnel.rules] == [
        ("accessories-ie", frozenset({"IE"}), 1000), ("accessories-all", None, 100),
    ]


def test_ramp_makes_a_new_version_on_top_of_the_active_one(store, apply):
    first = apply(RULES)
    record, _ = control.ramp(store, "warranties", "IE", Decimal(75), actor="a", reason="go")
    assert record.version == first.version + 1
    assert store.active_rules() == record
    assert store.rules_version(first.version) == first


def test_ramp_of_the_sample_rules_keeps_every_other_funnel(store, apply):
    apply(SAMPLE.read_text(encoding="utf-8"))
    before = active_ruleset(store)
    control.ramp(store, "warranties", "IE", Decimal(75), actor="a", reason="go")
    after = active_ruleset(store)
    assert after.funnel("warranties").rule_for("IE").basis_points == 7500
    assert after.funnel("warranties").rule_for("PT").basis_points == 5000
    for name in ["accessories", "subscriptions", "hardware"]:
        assert after.funnel(name).rules == before.funnel(name).rules
        assert after.funnel(name).signals == before.funnel(name).signals


@pytest.mark.parametrize(
    ("funnel", "reason", "message"),
    [
        ("nope", "go", "no funnel named 'nope'"),
        ("warranties", "", "a reason is required"),
        ("warranties", "   ", "a reason is required"),
    ],
    ids=["unknown-funnel", "empty-reason", "blank-reason"],
)
def test_ramp_refuses_with_control_error_and_stores_nothing(store, apply, funnel, reason,
                                                            message):
    first = apply(RULES)
    with pytest.raises(ControlError, match=message):
        control.ramp(store, funnel, "IE", Decimal(75), actor="a", reason=reason)
    assert store.active_rules() == first


def test_ramp_without_active_rules_raises_control_error(store):
    with pytest.raises(ControlError, match="no rules are active"):
        control.ramp(store, "warranties", None, Decimal(1), actor="a", reason="go")


@pytest.mark.parametrize("percent", ["150", "-1", "0.001"])
def test_ramp_to_an_invalid_percentage_raises_rules_error_and_stores_nothing(
    store, apply, percent
):
    first = apply(RULES)
    with pytest.raises(RulesError):
        control.ramp(store, "warranties", "IE", Decimal(percent), actor="a", reason="go")
    assert store.active_rules() == first


# --- kill / unkill ----------------------------------------------------------------------


@pytest.mark.parametrize("operation", [control.kill, control.unkill], ids=["kill", "unkill"])
@pytest.mark.parametrize("reason", ["", "  \n"], ids=["empty", "blank"])
def test_kill_and_unkill_require_a_reason(store, operation, reason):
    with pytest.raises(ControlError, match="a reason is required"):
        operation(store, "warranties", actor="bob", reason=reason)
    assert store.kill_switches() == {}
    assert store.audit_log() == []


def test_kill_sets_the_switch_and_records_an_audit_entry_with_actor_and_evidence(store, apply):
    apply()
    evidence = {"guardrail": "payment_failed", "z": 4.2}
    switch = control.kill(store, "warranties", actor="bob", reason="INC-7", evidence=evidence)
    assert store.kill_switches() == {"warranties": switch}
    assert (switch.scope, switch.actor, switch.reason) == ("warranties", "bob", "INC-7")
    entry = store.audit_log()[0]
    assert (entry.action, entry.actor, entry.target, entry.reason) == (
        "kill", "bob", "warranties", "INC-7")
    assert entry.details == {"evidence": evidence}


def test_kill_without_a_funnel_is_global(store):
    switch = control.kill(store, None, actor="bob", reason="INC-8")
    assert switch.scope == "*"
    assert set(store.kill_switches()) == {"*"}


def test_unkill_clears_the_switch_returns_it_and_records_an_audit_entry(store, apply):
    apply()
    switch = control.kill(store, "warranties", actor="bob", reason="INC-7")
    previous = control.unkill(store, "warranties", actor="carol", reason="fix deployed")
    assert previous == switch
    assert store.kill_switches() == {}
    assert [(e.action, e.actor, e.target, e.reason) for e in store.audit_log()][:2] == [
        ("unkill", "carol", "warranties", "fix deployed"),
        ("kill", "bob", "warranties", "INC-7"),
    ]


def test_unkill_of_a_switch_that_is_not_set_is_refused_and_not_audited(store):
    with pytest.raises(ControlError, match="not set"):
        control.unkill(store, None, actor="carol", reason="just in case")
    assert store.audit_log() == []


@pytest.mark.parametrize("name", ["warrantys", "Warranties", "nope"])
def test_kill_of_a_funnel_the_rules_do_not_name_is_refused(store, apply, name):
    apply()
    with pytest.raises(ControlError, match="no funnel named"):
        control.kill(store, name, actor="bob", reason="INC-7")
    assert store.kill_switches() == {}


def test_kill_with_an_empty_funnel_is_refused_not_global(store, apply):
    apply()
    with pytest.raises(ControlError, match="--funnel"):
        control.kill(store, " ", actor="bob", reason="INC-7")
    assert store.kill_switches() == {}


def test_a_ramp_sentence_says_the_percentage_a_country_had_by_a_wider_rule() -> None:
    """Before: 'IE: no rule -> 75%' when IE was at 50% by a rule naming several countries."""
    _, sentence = control.ramp_text(RULES, "warranties", "IE", Decimal(75))
    assert sentence == ("warranties / IE: 50% (by rule pilot) -> 75% (rule warranties-ie)")
    _, sentence = control.ramp_text(RULES, "accessories", "FR", Decimal(5))
    assert "no rule (legacy) -> 5%" in sentence
