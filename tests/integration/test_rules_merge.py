"""A file edit never silently undoes a ramp: it is merged on top of the active rules, and
an edit of a rule changed since the last import is refused as a named conflict (issue:
kill switch trust, case 7). A real proxy watching a real file; the CLI as a process."""

from __future__ import annotations

import subprocess
import time
from decimal import Decimal
from typing import Any

import httpx

from control import operations
from control.status import status_data
from tests.integration.conftest import RULES
from tests.support.processes import clean_env, strangler_cmd, wait_until


def percent(stack: Any, rule_id: str) -> float:
    funnel = status_data(stack.store)["funnels"][0]
    return next(r["percent"] for r in funnel["rules"] if r["id"] == rule_id)


def edit(stack: Any, old: str, new: str) -> None:
    text = stack.rules_file.read_text()
    assert old in text
    stack.rules_file.write_text(text.replace(old, new) + f"# edited {time.time()}\n")


def test_an_unrelated_edit_keeps_a_cli_ramp(make_stack) -> None:
    stack = make_stack()
    operations.ramp(stack.store, "warranties", "IE", Decimal(5), actor="rm", reason="ramp")
    wait_until(lambda: stack.store.active_rules().version == 2, 5, "the ramp")
    edit(stack, "{id: rest-half, countries: '*', percent: 50}",
         "{id: rest-half, countries: '*', percent: 40}")
    record = wait_until(lambda: (a := stack.store.active_rules()).version == 3 and a, 5,
                        "the edit applied")
    assert "merged" in record.reason
    assert percent(stack, "ie-all") == 5  # before: back to 100
    assert percent(stack, "rest-half") == 40
    [watched] = status_data(stack.store)["rules_files"]
    assert watched["drift"] == ["funnels[warranties].rules[ie-all]"]
    assert watched["conflict"] is None


def test_an_edit_of_a_ramped_rule_is_refused_as_a_conflict_until_resolved(make_stack) -> None:
    stack = make_stack()
    operations.ramp(stack.store, "warranties", "IE", Decimal(5), actor="rm", reason="ramp")
    wait_until(lambda: stack.store.active_rules().version == 2, 5, "the ramp")
    edit(stack, "{id: ie-all, countries: [IE], percent: 100}",
         "{id: ie-all, countries: [IE], percent: 60}")
    state = wait_until(lambda: (s := httpx.get(stack.url + "/_strangler/state").json())[
        "rules_conflict"] and s, 5, "the conflict reported")
    assert any("rules[ie-all]" in c for c in state["rules_conflict"])
    metrics = httpx.get(stack.url + "/metrics").text
    assert "strangler_rules_conflicts 1.0" in metrics
    [watched] = status_data(stack.store)["rules_files"]
    assert watched["conflict"]["conflicts"][0]["slot"] == "funnels[warranties].rules[ie-all]"
    assert stack.store.active_rules().version == 2 and percent(stack, "ie-all") == 5
    status = subprocess.run([*strangler_cmd(), "status", "--db-path",
                             str(stack.settings.db_path)], capture_output=True, text=True,
                            env=clean_env(), timeout=60, check=False)
    assert "RULES FILE EDIT REFUSED" in status.stdout and "ie-all" in status.stdout
    edit(stack, "percent: 60}", "percent: 5}")  # the file now agrees with the ramp
    wait_until(lambda: httpx.get(stack.url + "/_strangler/state").json()[
        "rules_conflict"] is None, 5, "the conflict resolved")
    assert "strangler_rules_conflicts 0.0" in httpx.get(stack.url + "/metrics").text
    assert percent(stack, "ie-all") == 5


def test_export_round_trips_and_ends_the_drift(make_stack) -> None:
    stack = make_stack()
    operations.ramp(stack.store, "warranties", "IE", Decimal(5), actor="rm", reason="ramp")
    wait_until(lambda: stack.store.active_rules().version == 2, 5, "the ramp")
    done = subprocess.run([*strangler_cmd(), "rules", "export", "-o", str(stack.rules_file),
                           "--db-path", str(stack.settings.db_path)], capture_output=True,
                          text=True, env=clean_env(), timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    wait_until(lambda: status_data(stack.store)["rules_files"][0]["drift"] == [], 5,
               "the file imported again")
    assert stack.store.active_rules().version == 2  # applying the export changed nothing
    assert RULES != stack.rules_file.read_text()


def test_a_rejected_file_edit_stays_visible_until_a_valid_file_arrives(make_stack) -> None:
    """Before: a rejected edit showed only in the log; /_strangler/state said
    rules_error: null and status looked healthy."""
    stack = make_stack()
    edit(stack, "percent: 100}", "percent: 150}")
    state = wait_until(lambda: (s := httpx.get(stack.url + "/_strangler/state").json())[
        "rules_file_error"] and s, 5, "the rejection reported")
    assert "percent" in state["rules_file_error"]
    assert "strangler_rules_file_rejected 1.0" in httpx.get(stack.url + "/metrics").text
    [watched] = status_data(stack.store)["rules_files"]
    assert "percent" in watched["error"]
    status = subprocess.run([*strangler_cmd(), "status", "--db-path",
                             str(stack.settings.db_path)], capture_output=True, text=True,
                            env=clean_env(), timeout=60, check=False)
    assert "RULES FILE REJECTED" in status.stdout
    assert stack.store.active_rules().version == 1
    edit(stack, "percent: 150}", "percent: 90}")
    wait_until(lambda: httpx.get(stack.url + "/_strangler/state").json()[
        "rules_file_error"] is None, 5, "the rejection cleared")
    assert status_data(stack.store)["rules_files"][0]["error"] is None
    assert "strangler_rules_file_rejected 0.0" in httpx.get(stack.url + "/metrics").text
