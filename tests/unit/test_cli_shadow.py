"""Shadow parity in the CLI (issue 17): `strangler shadow status|diff` read the summary the
proxy stores in the control store; `status`, `explain` and `rules diff` show the shadow
configuration; `rollout start --require-parity` waits for parity before its first step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from cli.main import app
from control import operations, rollout
from control.store import open_store
from shadow.compare import compare
from shadow.report import MemoryShadowReport, ShadowRecorder, store_summary
from shadow.selection import shadow_bucket

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = (ROOT / "rules" / "checkout.yaml").read_text()
HW_SALT = "hardware-2026-11"
# the sample rules with a shadow on hardware (10% of its legacy-served units) and one on
# accessories' pilot rule only
SHADOWED = SAMPLE.replace(f"""    salt: {HW_SALT}
""", f"""    salt: {HW_SALT}
    shadow:
      share: 10
      ignore: ['items[sku].name']
      min_units: 200
""").replace("""        countries: [IE, PT]
        percent: 10
""", """        countries: [IE, PT]
        percent: 10
        shadow: {share: 50}
""")
ITEMS = "POST /carts/{cart_id}/items"
UNITS = 250


def run(*args: str, input: str | None = None) -> Result:
    env = {"STRANGLER_DB_PATH": None, "STRANGLER_REDIS_URL": None, "STRANGLER_ACTOR": None}
    return CliRunner().invoke(app, list(args), env=env, input=input)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def db_with(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "control.sqlite3"
    store = open_store(None, str(path))
    operations.apply_rules_text(store, text, source="t", actor="rm", reason="setup")
    store.close()
    return ["--db-path", str(path)]


@pytest.fixture
def db(tmp_path: Path) -> list[str]:
    return db_with(tmp_path, SHADOWED)


def drift_summary() -> dict[str, Any]:
    """What the proxy stores after replaying hardware carts to a core that computes tax one
    cent lower on every cart with items, and mints a random token (noise)."""
    report = MemoryShadowReport()
    recorder = ShadowRecorder()
    for i in range(UNITS):
        legacy = {"id": "lg_cart_1", "tax": 100, "total": 1100, "email": "ann@example.com",
                  "token": "t-legacy", "items": [{"sku": "HW-1", "line_total": 1000}]}
        core = {"id": "co_cart_1", "tax": 99, "total": 1100, "email": "ann@example.com",
                "token": f"t-{i}", "items": [{"sku": "HW-1", "line_total": 1000}]}
        ids = {"lg_cart_1": "co_cart_1"}
        recorder.observe("hardware", f"unit-{i:04}", "POST /carts",
                         compare(201, {"id": "lg_cart_1"}, 201, {"id": "co_cart_1"}, ids=ids))
        recorder.observe("hardware", f"unit-{i:04}", ITEMS,
                         compare(201, legacy, 201, core, ids=ids), ("lg_cart_1", "co_cart_1"))
    recorder.dropped("hardware", "queue_full", 4)
    recorder.dropped("hardware", "unmapped", 2)
    report.add(recorder.drain())
    return report.summary()


def store_drift(db: list[str]) -> dict[str, Any]:
    store = open_store(None, db[1], create=False)
    summary = drift_summary()
    store_summary(store, summary)
    store.close()
    return summary


def table(out: str, first: str) -> list[list[str]]:
    """The tab-separated table whose header starts with `first`."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first + "\t"))
    rows = []
    for line in lines[start:]:
        if "\t" not in line:
            break
        rows.append(line.split("\t"))
    assert all(len(r) == len(rows[0]) for r in rows), rows
    return rows


# -- shadow status -------------------------------------------------------------------------------


def test_status_without_a_report_says_no_proxy_wrote_one(db: list[str]) -> None:
    out = ok(run("shadow", "status", *db)).stdout
    assert "no shadow report yet" in out and "no proxy has written one" in out
    assert json.loads(ok(run("shadow", "status", "--json", *db)).stdout) == {
        "at": None, "funnels": {}}


def test_status_without_any_shadow_configured_says_so(tmp_path: Path) -> None:
    plain = db_with(tmp_path, SAMPLE)
    out = ok(run("shadow", "status", *plain)).stdout
    assert "no shadow report yet" in out and "no funnel of the active rules has a shadow" in out


def test_status_gives_parity_per_funnel_and_route_with_units(db: list[str]) -> None:
    store_drift(db)
    out = ok(run("shadow", "status", *db)).stdout
    assert "over the last 24 h" in out and "95% confidence" in out
    funnels = table(out, "funnel")
    assert funnels[0][:6] == ["funnel", "shadow share", "units compared",
                              "units with a mismatch", "parity", "parity 95% interval"]
    rows = {r[0]: r for r in funnels[1:]}
    hw = rows["hardware"]
    assert hw[1:5] == ["10%", str(UNITS), str(UNITS), "0.00%"]
    assert hw[5].startswith("[0.00%, ") and hw[5].endswith("%]")
    assert hw[6:] == [str(2 * UNITS), str(UNITS), "queue_full 4, unmapped 2"]
    assert rows["accessories"][1:5] == ["rule accessories-pilot 50%", "0", "0", "-"]
    routes = {r[1]: r for r in table(out, "funnel\troute")[1:]}
    assert routes["POST /carts"][2:5] == [str(UNITS), "0", "0.00%"]
    items = routes[ITEMS]
    assert items[2:5] == [str(UNITS), str(UNITS), "100.00%"]
    assert f"tax 100.00% ({UNITS} of {UNITS})" in items[6]
    assert f"token 100.00% ({UNITS} of {UNITS}) noise?" in items[6]
    assert f"noise: hardware {ITEMS} token: differs in every one of {UNITS} comparisons" in out
    assert "add it to shadow.ignore" in out
    assert "noise: hardware" in out and f"{ITEMS} tax" not in out.split("noise:")[-1]
    assert "accessories: no request of it mirrored and compared in the window yet" in out


def test_status_json_is_the_stored_summary(db: list[str]) -> None:
    summary = store_drift(db)
    data = json.loads(ok(run("shadow", "status", "--json", *db)).stdout)
    assert data["funnels"] == json.loads(json.dumps(summary["funnels"]))
    assert isinstance(data["at"], float)


def test_status_reads_the_summary_from_a_redis_control_store(redis_clean_url: str) -> None:
    """With Redis, the proxy holding the monitor lease stores the summary in the Redis
    control store: the CLI reads it there like any other state."""
    store = open_store(redis_clean_url, "unused")
    store.initialize()  # as the first proxy does when it starts
    operations.apply_rules_text(store, SHADOWED, source="t", actor="rm", reason="setup")
    store_summary(store, drift_summary())
    store.close()
    args = ["--redis-url", redis_clean_url]
    rows = {r[0]: r for r in table(ok(run("shadow", "status", *args)).stdout, "funnel")}
    assert rows["hardware"][2:5] == [str(UNITS), str(UNITS), "0.00%"]
    out = ok(run("shadow", "diff", "--funnel", "hardware", "--route", ITEMS, *args)).stdout
    assert "tax: legacy 100, core 99" in out


# -- shadow diff ---------------------------------------------------------------------------------


def test_diff_names_the_fields_that_differ_with_examples_of_both_values(db: list[str]) -> None:
    store_drift(db)
    out = ok(run("shadow", "diff", "--funnel", "hardware", *db)).stdout
    assert "hardware: shadow 10% of legacy-served units" in out  # the configuration
    assert "hardware: parity 0.00% (95% interval [0.00%, " in out
    assert "dropped: queue_full 4, unmapped 2" in out
    assert f"hardware POST /carts: {UNITS} responses compared, 0 with a mismatch" in out
    fields = {r[0]: r for r in table(out, "field")[1:]}
    assert set(fields) == {"tax", "token"}  # only the fields that differ
    assert fields["tax"][1:5] == ["money", str(UNITS), str(UNITS), "100.00%"]
    assert fields["tax"][6] == "-" and fields["token"][6] == "noise"
    assert "tax, newest first (customer data redacted):" in out
    assert "tax: legacy 100, core 99  (legacy lg_cart_1, core co_cart_1)" in out
    assert 'token: legacy "[redacted]", core "[redacted]"' in out  # tokens are redacted
    assert "other fields compared without a mismatch" in out
    assert "differs in every one of" in out


def test_diff_of_one_route_any_parameter_spelling(db: list[str]) -> None:
    summary = store_drift(db)
    out = ok(run("shadow", "diff", "--funnel", "hardware", "--route",
                 "post /carts/{id}/items", *db)).stdout
    assert f"hardware {ITEMS}:" in out and "hardware POST /carts:" not in out
    data = json.loads(ok(run("shadow", "diff", "--funnel", "hardware", "--route",
                             "POST /carts/{cart_id}/items", "--json", *db)).stdout)
    assert list(data["funnels"]["hardware"]["routes"]) == [ITEMS]
    assert data["funnels"]["hardware"]["routes"][ITEMS] == json.loads(json.dumps(
        summary["funnels"]["hardware"]["routes"][ITEMS]))
    none = ok(run("shadow", "diff", "--funnel", "hardware", "--route", "GET /carts/{x}",
                  *db)).stdout
    assert "no comparison of GET /carts/{cart_id} on hardware" in none
    assert "routes compared: POST /carts, POST /carts/{cart_id}/items" in none


def test_diff_of_a_funnel_without_a_shadow_or_without_data_says_so(db: list[str]) -> None:
    store_drift(db)
    out = ok(run("shadow", "diff", "--funnel", "warranties", *db)).stdout
    assert "warranties has no shadow configured in the active rules" in out
    out = ok(run("shadow", "diff", "--funnel", "accessories", *db)).stdout
    assert "accessories: no request of it has been mirrored and compared" in out
    assert json.loads(ok(run("shadow", "diff", "--funnel", "accessories", "--json",
                             *db)).stdout)["funnels"] == {}


@pytest.mark.parametrize(("args", "words"), [
    (("--funnel", "hardwear"), ("no funnel named 'hardwear'; funnels: warranties, "
                                "accessories, subscriptions, hardware (with a shadow: "
                                "accessories, hardware)")),
    (("--funnel", ""), "no funnel named ''"),
    (("--funnel", "hardware", "--route", "POST /checkouts/{id}/orders"),
     "is refused: it places an order"),
    (("--funnel", "hardware", "--route", "GET /orders/{order_id}"), "is refused: it reads"),
    (("--funnel", "hardware", "--route", "carts"), "is not a route"),
    (("--funnel", "hardware", "--route", "GET /healthz"), "is not a route of the checkout"),
])
def test_diff_bad_values_exit_2_with_a_sentence(db: list[str], args: tuple[str, ...],
                                                 words: str) -> None:
    result = run("shadow", "diff", *args, *db)
    assert result.exit_code == 2, result.output
    assert words in " ".join(result.stderr.split())
    assert "Traceback" not in result.output


def test_shadow_tables_are_tab_separated_when_piped_and_prose_is_not_wrapped(
        db: list[str]) -> None:
    store_drift(db)
    for command in (("status",), ("diff", "--funnel", "hardware")):
        done = subprocess.run([sys.executable, "-m", "cli.main", "shadow", *command, *db],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        widths = {len(line.split("\t")) for line in lines if "\t" in line}
        assert len(widths) == (2 if command == ("status",) else 1), done.stdout
        assert any(line.lstrip().startswith("noise: ") and line.endswith(
            "add it to shadow.ignore") for line in lines), done.stdout


# -- status, explain, rules diff -----------------------------------------------------------------


def test_status_shows_each_rule_s_shadow_share_and_the_funnel_s_parity(db: list[str]) -> None:
    store_drift(db)
    data = json.loads(ok(run("status", "--json", *db)).stdout)
    funnels = {f["name"]: f for f in data["funnels"]}
    assert funnels["accessories"]["shadow"]["percent_by_rule"] == {
        "accessories-pilot": 50, "accessories-canary": None}
    assert funnels["hardware"]["shadow"]["percent_by_rule"] == {"hardware-off": 10}
    assert funnels["warranties"]["shadow"] == {"lines": [], "units": None, "percent_by_rule": {
        "warranties-pilot": None, "warranties-nordics": None, "warranties-rest": None}}
    assert funnels["hardware"]["shadow"]["units"]["compared"] == UNITS
    assert funnels["hardware"]["shadow"]["lines"] == [(
        "hardware: shadow 10% of legacy-served units; all cart-building routes; ignoring "
        "items[sku].name; parity needs 200 compared units")]
    out = ok(run("status", *db)).stdout
    header, *rows = table(out, "funnel")
    assert header[-1] == "shadow %"
    assert {r[1]: r[-1] for r in rows}["accessories-pilot"] == "50"
    assert {r[1]: r[-1] for r in rows}["warranties-rest"] == "-"
    assert "ignoring items[sku].name" in out  # not eaten as markup
    assert "accessories / rule accessories-pilot: shadow 50% of legacy-served units" in out
    assert f"hardware: parity 0% over {UNITS} compared units ({UNITS} with a mismatch)" in out


def _unit(inside: bool, share_bp: int = 1000) -> str:
    """A well-formed unit whose hardware shadow bucket is inside (or outside) the share."""
    return next(u for i in range(10_000) if (shadow_bucket(HW_SALT, u := f"unit-{i:06}")
                                             < share_bp) is inside)


def explain(db: list[str], *args: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ok(run("explain", "--json", *args, *db)).stdout)
    return data


def test_explain_says_whether_the_request_is_mirrored_and_why_not(db: list[str]) -> None:
    inside, outside = _unit(True), _unit(False)
    hw = ("--funnel", "hardware", "--country", "DE")
    yes = explain(db, *hw, "--session", inside, "--path", "/carts/lg_cart_1/items")
    assert (yes["backend"], yes["shadow"]["mirrored"]) == ("legacy", True)
    assert yes["shadow"]["why"].startswith(f"{ITEMS}: the unit's shadow bucket ")
    assert yes["shadow"]["config"].startswith("shadow 10% of legacy-served units")
    cases = {
        "the unit's shadow bucket": explain(db, *hw, "--session", outside),
        "is never mirrored: it places an order": explain(
            db, *hw, "--session", inside, "--path", "/checkouts/lg_chk_1/orders"),
        "GET /carts is not a route of the checkout contract": explain(
            db, *hw, "--session", inside, "--method", "GET"),
        "the core serves it": explain(db, *hw, "--session", inside, "--path",
                                      "/carts/co_cart_1"),
        "funnel warranties has no shadow configured": explain(
            db, "--funnel", "warranties", "--country", "DE", "--session", inside),
        "it matches no funnel": explain(db, "--session", inside),
    }
    for words, data in cases.items():
        assert data["shadow"]["mirrored"] is False, words
        assert words in data["shadow"]["why"], data["shadow"]["why"]
    text = ok(run("explain", *hw, "--session", inside, "--path", "/carts/lg_cart_1/items",
                  *db)).stdout
    assert "  shadow: mirrored: POST /carts/{cart_id}/items: the unit's shadow bucket" in text
    assert "ignoring items[sku].name" in text


def test_explain_under_a_kill_switch_is_never_mirrored(db: list[str]) -> None:
    ok(run("kill", "--funnel", "hardware", "--reason", "drill", *db))
    data = explain(db, "--funnel", "hardware", "--session", _unit(True))
    assert data["reason"] == "KILL_SWITCH" and data["shadow"]["mirrored"] is False
    assert "legacy serves it as KILL_SWITCH" in data["shadow"]["why"]


def test_explain_says_when_the_session_is_not_a_unit(db: list[str]) -> None:
    out = ok(run("explain", "--funnel", "hardware", "--session", "s-1", *db)).stdout
    assert "('s-1' is not)" in out and "minted" in out


def test_rules_diff_prints_the_shadow_changes(db: list[str], tmp_path: Path) -> None:
    changed = tmp_path / "next.yaml"
    changed.write_text(SHADOWED.replace("share: 10\n", "share: 25\n"), encoding="utf-8")
    out = ok(run("rules", "diff", str(changed), *db)).stdout
    assert "shadow parity:\n  hardware: shadow 10% of legacy-served units" in out
    assert "-> shadow 25% of legacy-served units" in out
    data = json.loads(ok(run("rules", "diff", str(changed), "--json", *db)).stdout)
    assert len(data["shadow_changes"]) == 1 and "25%" in data["shadow_changes"][0]
    unchanged = tmp_path / "same.yaml"
    unchanged.write_text(SHADOWED, encoding="utf-8")
    assert "shadow parity" not in ok(run("rules", "diff", str(unchanged), *db)).stdout


# -- rollout start --require-parity --------------------------------------------------------------


def rollouts(db: list[str]) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(ok(run("rollout", "status", "--json", *db)).stdout)
    return data


def test_a_gated_rollout_waits_at_zero_without_applying_anything(db: list[str]) -> None:
    started = ok(run("rollout", "start", "hardware", "--steps", "1,5,25", "--hold", "10m",
                     "--require-parity", "99.9", "--reason", "parity first", "--yes", *db))
    out = " ".join(started.stdout.split())
    assert "waits at 0% for shadow parity of at least 99.9% over 200 compared units" in out
    assert "then steps 1%, 5%, 25%; each step holds 10m" in out
    assert "first step (once shadow parity is met): hardware" in out
    history = json.loads(ok(run("rules", "history", "--json", *db)).stdout)
    assert [h["version"] for h in history] == [1]  # nothing applied
    [r] = rollouts(db)
    assert (r["state"], r["step_index"], r["percent"], r["parity_bar"],
            r["parity_min_units"]) == ("waiting", -1, "0", 99.9, 200)
    audit = json.loads(ok(run("audit", "--json", *db)).stdout)[0]
    assert (audit["action"], audit["target"]) == ("rollout.start", r["id"])
    assert audit["details"]["require_parity"] == 99.9
    # as the driver leaves it after a tick with 180 of 200 units compared
    store = open_store(None, db[1], create=False)
    plan = rollout.load(store, r["id"])
    assert plan is not None
    from shadow.report import parity_gate

    summary = {"funnels": {"hardware": {"units": {"compared": 180, "with_mismatch": 0}}}}
    waiting = rollout.step(plan, "pass", False, plan.created_at + 1,
                           parity=parity_gate(summary, "hardware", 99.9, 200)).rollout
    rollout.save(store, waiting)
    store.close()
    text = ok(run("rollout", "status", *db)).stdout
    row = table(text, "rollout")[1]
    assert row[3:6] == ["0/3", "0%", "waiting"]
    assert row[6] == "waiting for shadow parity: 100% over 180 of 200 units, need 99.9%"


def test_parity_min_units_overrides_the_shadow_s_min_units(db: list[str]) -> None:
    ok(run("rollout", "start", "accessories", "--country", "IE", "--steps", "20,50",
           "--require-parity", "99.5%", "--parity-min-units", "1000", "--reason", "x",
           "--yes", *db))
    [r] = rollouts(db)
    assert (r["parity_bar"], r["parity_min_units"], r["percent"], r["country"]) == (
        99.5, 1000, "10", "IE")


@pytest.mark.parametrize(("args", "words"), [
    (("warranties",), "funnel 'warranties' has no shadow configured: --require-parity needs"),
    (("accessories", "--country", "DE"), "has no shadow configured for DE"),
])
def test_require_parity_is_refused_without_a_shadow(db: list[str], args: tuple[str, ...],
                                                    words: str) -> None:
    result = run("rollout", "start", *args, "--require-parity", "99.9", "--reason", "x",
                 "--yes", *db)
    assert result.exit_code == 2, result.output
    assert words in " ".join(result.stderr.split())
    assert rollouts(db) == []
