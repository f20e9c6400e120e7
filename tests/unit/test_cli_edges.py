"""The CLI as docs/cli.md promises: exit 2 for every bad value and no traceback for any bad
input, tab-separated tables when piped, units on guardrail figures, the trip's evidence
shown before unkill asks, no log lines unless --verbose (issue: operators, item 6)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from control import operations, rollout
from control.store import open_store
from guardrails.report import store_report
from proxy.config import ProxySettings
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "rules" / "checkout.yaml"


@pytest.fixture
def db(tmp_path: Path) -> list[str]:
    path = tmp_path / "control.sqlite3"
    store = open_store(None, str(path))
    operations.apply_rules_text(store, SAMPLE.read_text(), source="t", actor="rm",
                                reason="pilot")
    store.close()
    return ["--db-path", str(path)]


def run(*args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    env = {"STRANGLER_DB_PATH": None, "STRANGLER_REDIS_URL": None}
    return CliRunner().invoke(app, list(args), env=env, input=input)


BAD_VALUES = [
    ("ramp", "warranties", "--percent", "150", "--reason", "x", "--yes"),
    ("ramp", "warranties", "--percent", "-1", "--reason", "x", "--yes"),
    ("ramp", "warranties", "--percent", "0.001", "--reason", "x", "--yes"),
    ("ramp", "warranties", "--percent", "NaN", "--reason", "x", "--yes"),
    ("ramp", "warranties", "--percent", "lots", "--reason", "x", "--yes"),
    ("rollout", "start", "warranties", "--steps", "5,1", "--reason", "x", "--yes"),
    ("rollout", "start", "warranties", "--steps", "1,500", "--reason", "x", "--yes"),
    ("rollout", "start", "warranties", "--hold", "soon", "--reason", "x", "--yes"),
    ("kill", "--global", "--funnel", "warranties", "--reason", "x"),
    ("up", "--port", "99999"),
    ("up", "--port", "65535"),
    ("serve", "--port", "0"),
    ("serve", "--admin-port", "70000"),
    ("audit", "--limit", "many"),
    ("shadow", "diff", "--funnel", "nope"),
    ("shadow", "diff", "--funnel", ""),
    ("shadow", "diff"),
    ("shadow", "diff", "--funnel", "warranties", "--route", "POST /checkouts/{id}/orders"),
    ("shadow", "diff", "--funnel", "warranties", "--route", "somewhere"),
    ("rollout", "start", "warranties", "--require-parity", "lots", "--reason", "x", "--yes"),
    ("rollout", "start", "warranties", "--require-parity", "0", "--reason", "x", "--yes"),
    ("rollout", "start", "warranties", "--require-parity", "100.1", "--reason", "x", "--yes"),
    ("rollout", "start", "warranties", "--require-parity", "NaN", "--reason", "x", "--yes"),
    ("rollout", "start", "warranties", "--require-parity", "99", "--parity-min-units", "0",
     "--reason", "x", "--yes"),
    ("rollout", "start", "warranties", "--parity-min-units", "10", "--reason", "x", "--yes"),
    ("rollout", "start", "warranties", "--require-parity", "99.9", "--reason", "x", "--yes"),
    ("explain", "--method", "FETCH"),
]


@pytest.mark.parametrize("args", BAD_VALUES, ids=[" ".join(a) for a in BAD_VALUES])
def test_a_bad_value_exits_2_without_a_traceback(args: tuple[str, ...], db: list[str]) -> None:
    result = run(*args, *([] if args[0] == "up" else db))  # `up` has no --db-path
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    # the value was judged: the command and its options exist
    assert "No such command" not in result.output and "No such option" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit)


@pytest.mark.parametrize("command", ["serve", "up"])
def test_a_bad_proxy_setting_is_refused_before_anything_starts(command: str,
                                                                tmp_path: Path) -> None:
    """A STRANGLER_* variable the proxy refuses: exit 2 naming it, no traceback, and for
    `up` before the core and the legacy stub start (they would answer on their ports)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("STRANGLER_DB_PATH", "STRANGLER_REDIS_URL")}
    env.update(STRANGLER_SHADOW_MAX_BUSY="2", STRANGLER_SHADOW_QUEUE="lots")
    args = ["--port", str(port)] + (["--data-dir", str(tmp_path)] if command == "up" else [])
    done = subprocess.run([sys.executable, "-m", "cli.main", command, *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    err = " ".join(done.stderr.split())
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "STRANGLER_SHADOW_MAX_BUSY='2'" in err and "less than or equal to 1" in err
    assert "STRANGLER_SHADOW_QUEUE='lots'" in err
    assert "checkout core" not in done.stdout  # `up` printed no banner: nothing started


def test_ramp_out_of_range_names_the_range_not_a_rules_file(db: list[str]) -> None:
    result = run("ramp", "warranties", "--percent", "150", "--reason", "x", "--yes", *db)
    assert "between 0 and 100" in result.output and "yaml" not in result.output


def piped(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


@pytest.mark.parametrize("command", [("audit",), ("rules", "history"), ("rollout", "status")])
def test_tables_are_tab_separated_when_piped_and_never_wrapped(
    command: tuple[str, ...], db: list[str],
) -> None:
    store = open_store(None, db[1])
    long_reason = "a reason long enough to wrap an eighty column terminal " * 3
    operations.apply_rules_text(store, SAMPLE.read_text() + "\n# 2\n", source="t",
                                actor="rm", reason=long_reason)
    rollout.register(store, rollout.new_rollout("warranties", "DE", [Decimal(1)], 60,
                                                reason=long_reason, actor="rm"))
    store.close()
    lines = piped(*command, *db).splitlines()
    header = lines[0].split("\t")
    assert len(header) >= 4
    assert all(len(line.split("\t")) == len(header) for line in lines[1:])
    assert len(lines) >= 2


def test_guard_status_shows_units_and_explains_the_bound(db: list[str]) -> None:
    store = open_store(None, db[1])
    store_report(store, {"at": time.time(), "rules_version": "1", "telemetry": "ok",
                         "funnels": {"warranties": {"verdict": "pass", "killed": False,
                                                    "guardrails": [
        {"name": "conversion", "verdict": "pass", "core_estimate": 0.41,
         "legacy_estimate": 0.4, "bound": 0.02, "threshold": 0.1, "n_core": 400,
         "n_legacy": 410, "detail": "", "evidence": {}},
        {"name": "latency_p95", "verdict": "pass", "core_estimate": 160.72389999999996,
         "legacy_estimate": 300.0, "bound": 0.8, "threshold": 1.5, "n_core": 400,
         "n_legacy": 410, "detail": "", "evidence": {"ceiling_ms": None, "max_ratio": 1.5}},
        {"name": "error_budget", "verdict": "pass", "core_estimate": 0.001,
         "legacy_estimate": 0.002, "bound": 2.0, "threshold": 14.4, "n_core": 400,
         "n_legacy": 410, "detail": "", "evidence": {}},
    ]}}})
    store.close()
    out = piped("guard", "status", *db)
    assert "41.0%\t40.0%\t2.0%\t10.0%" in out
    assert "161 ms\t300 ms\t0.8x\t1.5x" in out
    assert "2x\t14.4x" in out
    assert "160.7238" not in out


def test_unkill_shows_the_trip_before_it_asks_and_nothing_is_logged(db: list[str]) -> None:
    store = open_store(None, db[1])
    operations.kill(store, "warranties", actor="guardrail-monitor", reason="tripped",
                    evidence={"guardrails": [
                        {"name": "payment_success", "verdict": "fail", "core_estimate": 0.5,
                         "legacy_estimate": 0.9, "bound": 0.3, "threshold": 0.05,
                         "n_core": 120, "n_legacy": None}]})
    store.close()
    done = subprocess.run([sys.executable, "-m", "cli.main", "unkill", "--funnel",
                           "warranties", *db], input="fix deployed\n", capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.index("payment_success") < out.index("Why is it safe")
    assert "50.0%" in out and "None" not in out
    assert done.stderr == ""  # no stray WARNING strangler.control line


def test_a_stopped_rollout_says_which_guardrail_failed() -> None:
    r = rollout.new_rollout("warranties", None, [Decimal(1), Decimal(5)], 0, reason="x",
                            actor="y", now=0)
    stopped = rollout.step(r, "fail", False, 10, ("payment_success", "error_budget")).rollout
    assert stopped.detail == "guardrails failed: payment_success, error_budget: stopped"


def test_every_proxy_setting_is_documented() -> None:
    docs = (ROOT / "docs" / "proxy.md").read_text()
    missing = [name for name in ProxySettings.model_fields
               if not re.search(rf"\b{name.upper()}\b", docs)]
    assert missing == []


def test_serve_help_says_what_serve_loads() -> None:
    out = " ".join(run("serve", "--help").output.split())  # unwrapped
    assert "rules/checkout.yaml" not in out and "the proxy routes by the rules" in out


def test_two_ups_cannot_share_a_data_dir(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", ("import sys, time; from pathlib import Path; "
         "from cli.run import _lock_data_dir; _lock_data_dir(Path(sys.argv[1])); "
         "print('locked', flush=True); time.sleep(60)"), str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = run("up", "--data-dir", str(tmp_path), "--port", "18080")
        assert result.exit_code == 1
        assert f"pid {holder.pid}" in result.output and "--data-dir" in result.output
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()


def test_status_counts_for_each_rule_only_the_traffic_it_matched() -> None:
    """Before: the '*' row summed every country, those of earlier rules too, so a 0% rule
    appeared to send 16.8% to the core."""
    from cli.ops import _live, rule_countries

    rules = [{"id": "ie", "countries": ["IE"], "percent": 50},
             {"id": "rest", "countries": "*", "percent": 0}]
    live = {"IE": {"core": 1.0, "legacy": 1.0}, "FR": {"legacy": 3.0}}
    ie, rest = rule_countries(rules, live)
    assert (ie, rest) == ({"IE"}, {"FR"})
    assert _live(live, rest).startswith("0.0% core")
    assert _live(live, ie).startswith("50.0% core")
