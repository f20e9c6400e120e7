"""The `strangler` command, run in-process with typer's CliRunner."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import Result
from typer.testing import CliRunner

from cli.main import app
from control.store import open_store

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "rules" / "checkout.yaml"
COMMITTED_SCHEMA = ROOT / "rules" / "rules.schema.json"

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
"""

Run = Callable[..., Result]


@pytest.fixture
def strangler() -> Run:
    """Run the CLI with no STRANGLER_* settings leaking in from the environment."""
    runner = CliRunner()
    env = {"STRANGLER_DB_PATH": None, "STRANGLER_REDIS_URL": None, "STRANGLER_ACTOR": None}

    def run(*args: str, input: str | None = None) -> Result:
        return runner.invoke(app, list(args), env=env, input=input)

    return run


@pytest.fixture
def db(tmp_path: Path) -> list[str]:
    """A store as the proxy leaves it when it starts (the CLI never creates one)."""
    path = tmp_path / "control.sqlite3"
    open_store(None, str(path)).close()
    return ["--db-path", str(path)]


@pytest.fixture(params=["sqlite", "redis"])
def store_args(request: pytest.FixtureRequest, db: list[str]) -> list[str]:
    if request.param == "sqlite":
        return db
    url = request.getfixturevalue("redis_clean_url")
    open_store(url, "unused").initialize()  # as the first proxy does when it starts
    return ["--redis-url", url]


@pytest.fixture
def rules_file(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str, name: str = "rules.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def as_json(result: Result) -> Any:
    return json.loads(ok(result).stdout)


# --- rules validate ---------------------------------------------------------------------


def test_rules_validate_accepts_the_sample_rules(strangler):
    result = ok(strangler("rules", "validate", str(SAMPLE)))
    assert "4 funnels, 7 rules" in " ".join(result.stdout.split())


def test_rules_validate_json_summarises_the_sample_rules(strangler):
    data = as_json(strangler("rules", "validate", "--json", str(SAMPLE)))
    assert data["valid"] is True
    assert data["funnels"]["warranties"][0] == {
        "id": "warranties-pilot", "countries": ["FI", "IE", "PT"], "percent": 50.0,
    }
    assert data["funnels"]["subscriptions"] == [
        {"id": "subscriptions-dark", "countries": "*", "percent": 0.01},
    ]


SECOND_FUNNEL = """\
  - name: warranties
    match: {header: other}
    salt: w2
"""

# name: (edit of RULES, line, field, message fragment)
INVALID_RULES = {
    "unknown-key": (
        lambda t: t.replace("    salt: w1\n", "    salt: w1\n    colour: red\n"),
        6, "funnels[0].colour", "unknown key",
    ),
    "percent-150": (
        lambda t: t.replace("percent: 50", "percent: 150"),
        9, "funnels[0].rules[0].percent", "less than or equal to 100",
    ),
    "percent-0.001": (
        lambda t: t.replace("percent: 50", "percent: 0.001"),
        9, "funnels[0].rules[0].percent", "2 decimal places",
    ),
    "duplicate-funnel-name": (
        lambda t: t + SECOND_FUNNEL,
        13, "funnels[1].name", "duplicate funnel 'warranties'",
    ),
    "unknown-country-XX": (
        lambda t: t.replace("[IE, PT]", "[IE, XX]"),
        8, "funnels[0].rules[0].countries[1]", "'XX' is not an ISO 3166-1 alpha-2",
    ),
    "lower-case-country-de": (
        lambda t: t.replace("[IE, PT]", "[de, PT]"),
        8, "funnels[0].rules[0].countries[0]", "'de' is not an ISO 3166-1 alpha-2",
    ),
    "invalid-yaml": (
        lambda t: t.replace("match: {header: warranties}", "match: {header: warranties"),
        5, "(file)", "invalid YAML",
    ),
}


@pytest.mark.parametrize(
    ("edit", "line", "field", "message"), INVALID_RULES.values(), ids=INVALID_RULES.keys()
)
def test_rules_validate_exits_1_naming_file_line_and_field(
    strangler, rules_file, edit, line, field, message
):
    path = rules_file(edit(RULES))
    result = strangler("rules", "validate", str(path))
    assert result.exit_code == 1
    assert f"{path}:{line}: {field}: " in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize(
    ("edit", "line", "field", "message"), INVALID_RULES.values(), ids=INVALID_RULES.keys()
)
def test_rules_validate_json_lists_errors_with_file_line_and_field(
    strangler, rules_file, edit, line, field, message
):
    path = rules_file(edit(RULES))
    result = strangler("rules", "validate", "--json", str(path))
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["valid"] is False
    errors = [(e["file"], e["line"], e["field"] or "(file)") for e in data["errors"]]
    assert (str(path), line, field) in errors
    assert any(message in e["message"] for e in data["errors"])


def test_rules_validate_of_a_missing_file_exits_1(strangler, tmp_path):
    result = strangler("rules", "validate", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 1
    assert "cannot read" in result.stderr


# --- rules apply, status, history -------------------------------------------------------


def test_rules_apply_then_status_json_shows_version_and_percentages(strangler, store_args):
    ok(strangler("rules", "apply", str(SAMPLE), "--reason", "pilot", "--actor", "alice",
                 *store_args))
    data = as_json(strangler("status", "--json", *store_args))
    assert data["rules_version"] == 1
    assert data["rules_applied_by"] == "alice"
    percentages = {f["name"]: [(r["id"], r["percent"]) for r in f["rules"]]
                   for f in data["funnels"]}
    assert percentages == {
        "warranties": [("warranties-pilot", 50), ("warranties-nordics", 5),
                       ("warranties-rest", 0)],
        "accessories": [("accessories-pilot", 10), ("accessories-canary", 0.5)],
        "subscriptions": [("subscriptions-dark", 0.01)],
        "hardware": [("hardware-off", 0)],
    }
    assert data["kill_switches"] == {}


def test_status_json_without_rules_shows_no_version(strangler, db):
    data = as_json(strangler("status", "--json", *db))
    assert data["rules_version"] is None
    assert data["funnels"] == []


def test_status_prints_a_table(strangler, db):
    ok(strangler("rules", "apply", str(SAMPLE), "--reason", "pilot", *db))
    result = ok(strangler("status", *db))
    assert "rules version: 1" in result.stdout
    assert "warranties-pilot" in result.stdout


def test_rules_apply_with_a_stale_expect_version_exits_4_and_keeps_the_version(strangler, db):
    ok(strangler("rules", "apply", str(SAMPLE), "--reason", "pilot", *db))
    result = strangler("rules", "apply", str(SAMPLE), "--reason", "again",
                       "--expect-version", "7", *db)
    assert result.exit_code == 4
    assert "expected version 7, found 1" in result.stderr
    assert as_json(strangler("status", "--json", *db))["rules_version"] == 1


def test_rules_apply_with_the_active_expect_version_applies(strangler, db):
    ok(strangler("rules", "apply", str(SAMPLE), "--reason", "pilot", *db))
    ok(strangler("rules", "apply", str(SAMPLE), "--reason", "again", "--expect-version", "1",
                 *db))
    assert as_json(strangler("status", "--json", *db))["rules_version"] == 2


def test_rules_apply_of_invalid_rules_exits_1_and_applies_nothing(strangler, db, rules_file):
    path = rules_file(RULES.replace("percent: 50", "percent: 150"))
    result = strangler("rules", "apply", str(path), "--reason", "oops", *db)
    assert result.exit_code == 1
    assert f"{path}:9: funnels[0].rules[0].percent" in result.stderr
    assert as_json(strangler("status", "--json", *db))["rules_version"] is None


def test_ramp_changes_a_percentage_and_records_the_reason_in_history(strangler, db):
    ok(strangler("rules", "apply", str(SAMPLE), "--reason", "pilot", *db))
    ok(strangler("ramp", "warranties", "--country", "se", "--percent", "7.5",
                 "--reason", "guardrails green", "--actor", "alice", "--yes", *db))
    data = as_json(strangler("status", "--json", *db))
    assert data["rules_version"] == 2
    warranties = next(f for f in data["funnels"] if f["name"] == "warranties")
    assert warranties["rules"][1] == {
        "id": "warranties-nordics", "countries": ["SE"], "percent": 7.5,
    }
    history = as_json(strangler("rules", "history", "--json", *db))
    assert [h["version"] for h in history] == [2, 1]
    assert history[0]["actor"] == "alice"
    assert history[0]["reason"].startswith("guardrails green (")
    assert "warranties / SE: 5% -> 7.5%" in history[0]["reason"]
    assert "text" not in history[0]


@pytest.mark.parametrize(("answer", "code", "version"), [("n\n", 1, 1), ("y\n", 0, 2)])
def test_ramp_shows_the_blast_radius_and_asks_first(strangler, db, answer, code, version):
    ok(strangler("rules", "apply", str(SAMPLE), "--reason", "pilot", *db))
    result = strangler("ramp", "warranties", "--country", "IE", "--percent", "80",
                       "--reason", "x", *db, input=answer)
    assert result.exit_code == code
    assert "warranties / IE: 50% -> 80% (30.00% of units move to core)" in result.stdout
    assert as_json(strangler("status", "--json", *db))["rules_version"] == version


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["nope", "--percent", "5", "--reason", "x", "--yes"], 1),
        (["warranties", "--percent", "150", "--reason", "x", "--yes"], 2),
        (["warranties", "--percent", "five", "--reason", "x", "--yes"], 2),
        (["warranties", "--percent", "5", "--yes"], 2),
    ],
    ids=["unknown-funnel", "percent-150", "not-a-number", "no-reason"],
)
def test_ramp_refusals_exit_with_an_error_and_keep_the_version(strangler, db, args, code):
    ok(strangler("rules", "apply", str(SAMPLE), "--reason", "pilot", *db))
    assert strangler("ramp", *args, *db).exit_code == code
    assert as_json(strangler("status", "--json", *db))["rules_version"] == 1


# --- kill / unkill ----------------------------------------------------------------------


def test_kill_then_status_shows_the_switch_and_unkill_clears_it(strangler, store_args):
    ok(strangler("rules", "apply", str(SAMPLE), "--reason", "pilot", *store_args))
    ok(strangler("kill", "--funnel", "warranties", "--reason", "x", "--actor", "bob",
                 *store_args))
    data = as_json(strangler("status", "--json", *store_args))
    assert set(data["kill_switches"]) == {"warranties"}
    assert data["kill_switches"]["warranties"]["reason"] == "x"
    assert data["kill_switches"]["warranties"]["actor"] == "bob"
    killed = {f["name"]: f["killed"] for f in data["funnels"]}
    assert killed == {"warranties": True, "accessories": False, "subscriptions": False,
                      "hardware": False}

    result = ok(strangler("unkill", "--funnel", "warranties", "--reason", "fixed", *store_args))
    assert "cleared (was set by bob: x)" in result.stdout
    data = as_json(strangler("status", "--json", *store_args))
    assert data["kill_switches"] == {}
    assert not any(f["killed"] for f in data["funnels"])


def test_global_kill_works_without_rules_and_shows_in_status(strangler, store_args):
    ok(strangler("kill", "--reason", "INC-9", *store_args))
    data = as_json(strangler("status", "--json", *store_args))
    assert set(data["kill_switches"]) == {"*"}


def test_unkill_of_a_switch_that_is_not_set_exits_1_and_audits_nothing(strangler, db):
    result = strangler("unkill", "--funnel", "warranties", "--reason", "x", *db)
    assert result.exit_code == 1
    assert "not set" in result.output
    assert as_json(strangler("audit", "--json", *db)) == []


def test_kill_without_reason_exits_2(strangler, db):
    result = strangler("kill", "--funnel", "warranties", *db)
    assert result.exit_code == 2


def test_unkill_without_reason_asks_for_one(strangler, db):
    ok(strangler("rules", "apply", str(SAMPLE), "--reason", "pilot", *db))
    ok(strangler("kill", "--funnel", "warranties", "--reason", "drill", *db))
    assert strangler("unkill", "--funnel", "warranties", *db).exit_code == 1  # no answer
    assert as_json(strangler("status", "--json", *db))["kill_switches"]
    result = strangler("unkill", "--funnel", "warranties", *db, input="fix deployed\n")
    assert "Why is it safe" in ok(result).stdout
    assert as_json(strangler("status", "--json", *db))["kill_switches"] == {}
    assert as_json(strangler("audit", "--json", *db))[0]["reason"] == "fix deployed"


def test_kill_with_a_blank_reason_exits_1(strangler, db):
    result = strangler("kill", "--funnel", "warranties", "--reason", " ", *db)
    assert result.exit_code == 1
    assert "a reason is required" in result.stderr
    assert as_json(strangler("status", "--json", *db))["kill_switches"] == {}


# --- rules schema -----------------------------------------------------------------------


@pytest.fixture
def printed_schema(strangler) -> dict[str, Any]:
    return as_json(strangler("rules", "schema"))


def test_rules_schema_validates_the_sample_rules(printed_schema):
    validator = jsonschema.Draft202012Validator(printed_schema)
    validator.check_schema(printed_schema)
    assert list(validator.iter_errors(yaml.safe_load(SAMPLE.read_text()))) == []


@pytest.mark.parametrize("case", ["unknown-key", "percent-150"])
def test_rules_schema_rejects_an_unknown_key_and_an_out_of_range_percent(printed_schema, case):
    edit = INVALID_RULES[case][0]
    validator = jsonschema.Draft202012Validator(printed_schema)
    assert list(validator.iter_errors(yaml.safe_load(edit(RULES)))) != []


def test_rules_schema_equals_the_committed_schema_file(strangler):
    result = ok(strangler("rules", "schema"))
    assert result.stdout == COMMITTED_SCHEMA.read_text(encoding="utf-8"), (
        "rules/rules.schema.json is stale: run `strangler rules schema -o rules/rules.schema.json`"
    )


def test_rules_schema_output_option_writes_the_same_text(strangler, tmp_path):
    out = tmp_path / "schema.json"
    ok(strangler("rules", "schema", "-o", str(out)))
    assert out.read_text() == COMMITTED_SCHEMA.read_text(encoding="utf-8")


# --- diff / rollback / explain / audit ----------------------------------------------------


def test_rules_diff_gives_the_blast_radius_without_applying(strangler, db, rules_file):
    ok(strangler("rules", "apply", str(SAMPLE), "--reason", "pilot", *db))
    path = rules_file(SAMPLE.read_text().replace("percent: 50", "percent: 20"))
    data = as_json(strangler("rules", "diff", str(path), "--json", *db))
    assert data["from_version"] == 1
    moved = {(c["funnel"], c["country"]): c["to_legacy"] for c in data["changes"]}
    assert moved == {("warranties", "FI"): 0.3, ("warranties", "IE"): 0.3,
                     ("warranties", "PT"): 0.3}
    text = ok(strangler("rules", "diff", str(path), *db)).stdout
    assert "warranties / IE: 50% -> 20% (30.00% move back to legacy)" in " ".join(text.split())
    assert as_json(strangler("status", "--json", *db))["rules_version"] == 1


def test_rules_rollback_restores_an_earlier_version_as_a_new_one(strangler, db):
    ok(strangler("rules", "apply", str(SAMPLE), "--reason", "pilot", *db))
    ok(strangler("ramp", "warranties", "--country", "IE", "--percent", "90", "--reason", "up",
                 "--yes", *db))
    ok(strangler("rules", "rollback", "--reason", "declines up", *db))
    data = as_json(strangler("status", "--json", *db))
    assert data["rules_version"] == 3
    warranties = next(f for f in data["funnels"] if f["name"] == "warranties")
    assert warranties["rules"][0]["id"] == "warranties-pilot"  # the IE rule is gone again
    assert strangler("rules", "rollback", "9", "--reason", "x", *db).exit_code == 1


@pytest.mark.parametrize(("args", "backend", "reason"), [
    (["--path", "/carts/co_cart_1"], "core", "OWNER"),
    (["--path", "/orders/lg_ord_1"], "legacy", "OWNER"),
    (["--funnel", "hardware", "--country", "DE"], "legacy", "RULE"),
    (["--country", "DE"], "legacy", "DEFAULT"),
])
def test_explain_says_where_and_why(strangler, db, args, backend, reason):
    ok(strangler("rules", "apply", str(SAMPLE), "--reason", "pilot", *db))
    data = as_json(strangler("explain", *args, "--json", *db))
    assert (data["backend"], data["reason"]) == (backend, reason)


def test_explain_reports_the_kill_switch_and_unknown_funnels(strangler, db):
    ok(strangler("rules", "apply", str(SAMPLE), "--reason", "pilot", *db))
    ok(strangler("kill", "--reason", "drill", *db))
    data = as_json(strangler("explain", "--funnel", "warranties", "--country", "IE", "--json", *db))
    assert (data["backend"], data["reason"]) == ("legacy", "KILL_SWITCH")
    assert strangler("explain", "--funnel", "nope", *db).exit_code == 1


def test_audit_lists_who_did_what_and_why(strangler, db):
    ok(strangler("rules", "apply", str(SAMPLE), "--reason", "pilot", "--actor", "rm", *db))
    ok(strangler("kill", "--funnel", "warranties", "--reason", "INC-1", "--actor", "oncall", *db))
    entries = as_json(strangler("audit", "--json", *db))
    assert [(e["actor"], e["action"], e["reason"]) for e in entries] == [
        ("oncall", "kill", "INC-1"), ("rm", "rules.apply", "pilot"),
    ]


# --- rollout / guard --------------------------------------------------------------------


def test_rollout_start_applies_the_first_step_and_people_control_it(strangler, db):
    ok(strangler("rules", "apply", str(SAMPLE), "--reason", "pilot", *db))
    started = ok(strangler("rollout", "start", "warranties", "--country", "DE", "--steps",
                           "1,5,25", "--hold", "10m", "--reason", "go", "--yes", *db))
    assert "at 1%" in started.stdout
    data = as_json(strangler("status", "--json", *db))
    warranties = next(f for f in data["funnels"] if f["name"] == "warranties")
    assert warranties["rules"][0] == {"id": "warranties-de", "countries": ["DE"], "percent": 1.0}
    [rollout] = as_json(strangler("rollout", "status", "--json", *db))
    assert (rollout["state"], rollout["percent"], rollout["hold_seconds"]) == ("running", "1", 600)
    ok(strangler("rollout", "pause", rollout["id"], "--reason", "lunch", *db))
    assert as_json(strangler("audit", "--json", *db))[0]["action"] == "rollout.pause"
    # a second rollout of the same funnel is refused while one is active
    again = strangler("rollout", "start", "warranties", "--reason", "x", *db)
    assert again.exit_code == 1 and "already in progress" in again.stderr


@pytest.mark.parametrize(("args", "code", "words"), [
    (["nope", "--reason", "x"], 1, "no funnel"),
    (["warranties", "--steps", "5,1", "--reason", "x"], 2, "increasing"),
    (["warranties", "--hold", "soon", "--reason", "x"], 2, "duration"),
])
def test_rollout_start_refusals(strangler, db, args, code, words):
    ok(strangler("rules", "apply", str(SAMPLE), "--reason", "pilot", *db))
    result = strangler("rollout", "start", *args, *db)
    assert result.exit_code == code
    assert words in result.stderr


def test_rollout_start_shows_the_blast_radius_of_its_first_step_and_asks(strangler, db):
    ok(strangler("rules", "apply", str(SAMPLE), "--reason", "pilot", *db))
    declined = strangler("rollout", "start", "warranties", "--country", "DE", "--steps",
                         "5,25", "--reason", "go", *db, input="n\n")
    assert declined.exit_code == 1
    assert "blast radius" in declined.stdout and "DE" in declined.stdout
    assert "apply?" in declined.stdout
    assert as_json(strangler("rollout", "status", "--json", *db)) == []
    assert as_json(strangler("rules", "history", "--json", *db))[0]["version"] == 1
    accepted = strangler("rollout", "start", "warranties", "--country", "DE", "--steps",
                         "5,25", "--reason", "go", *db, input="y\n")
    assert "at 5%" in ok(accepted).stdout


def test_rollout_start_that_lowers_a_percentage_needs_allow_lower(strangler, db):
    ok(strangler("rules", "apply", str(SAMPLE), "--reason", "pilot", *db))  # IE at 50%
    lowered = strangler("rollout", "start", "warranties", "--country", "IE", "--steps",
                        "1,5,100", "--reason", "again", "--yes", *db)
    assert lowered.exit_code == 2
    assert "lower" in lowered.stderr and "50%" in lowered.stderr and "--allow-lower" in (
        lowered.stderr)
    assert as_json(strangler("rules", "history", "--json", *db))[0]["version"] == 1
    ok(strangler("rollout", "start", "warranties", "--country", "IE", "--steps", "1,5,100",
                 "--reason", "again", "--yes", "--allow-lower", *db))


def test_rollout_needs_guardrails_on_the_funnel(strangler, db, rules_file):
    path = rules_file(RULES)
    ok(strangler("rules", "apply", str(path), "--reason", "no guardrails", *db))
    result = strangler("rollout", "start", "warranties", "--reason", "x", *db)
    assert result.exit_code == 1 and "no guardrails" in result.stderr


def _store_report(db, report):
    from control.store.sqlite_store import SqliteControlStore
    from guardrails.monitor import REPORT_KEY

    store = SqliteControlStore(db[1])
    store.set_meta(REPORT_KEY, json.dumps(report))
    store.close()


def _guardrail(name, verdict):
    return {"name": name, "verdict": verdict, "core_estimate": 0.8, "legacy_estimate": 0.95,
            "bound": 0.12, "threshold": 0.05, "n_core": 400, "n_legacy": 410, "detail": "",
            "evidence": {}}


@pytest.mark.parametrize(("verdict", "code"), [("pass", 0), ("insufficient_data", 0),
                                               ("fail", 3)])
def test_guard_status_shows_the_monitor_report_and_exits_3_on_failure(strangler, db, verdict,
                                                                      code):
    _store_report(db, {"at": 1.0, "rules_version": "1", "telemetry": "ok", "funnels": {
        "warranties": {"verdict": verdict, "killed": False,
                       "guardrails": [_guardrail("payment_success", verdict)]}}})
    result = strangler("guard", "status", *db)
    assert result.exit_code == code
    assert "payment_success" in result.stdout and verdict in result.stdout
    data = json.loads(strangler("guard", "status", "--json", *db).stdout)
    assert data["funnels"]["warranties"]["guardrails"][0]["n_core"] == 400


def test_guard_status_without_a_report_says_so(strangler, db):
    result = ok(strangler("guard", "status", *db))
    assert "no guardrail report yet" in result.stdout
