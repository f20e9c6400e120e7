"""The kill switch never lies: control commands name real things, act on the store the
proxy reads, and never report a success they did not have (issue: kill switch trust).

The CLI runs as a real process (`strangler ...`), against real SQLite files and Redis.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from control.store import open_store
from tests.support.processes import REPO, clean_env, strangler_cmd

RULES = """\
schema: 1
funnels:
  - name: warranties
    match: {header: warranties}
    salt: w1
    guardrails: {conversion: null, latency_p95: null, sample_ratio: null,
                 payment_success: null, error_budget: null}
    rules:
      - {id: ie, countries: [IE], percent: 75}
      - {id: rest, countries: '*', percent: 10}
  - name: gift-cards
    match: {header: gift-cards}
    salt: g1
    rules:
      - {id: all, countries: '*', percent: 5}
"""


def strangler(*args: str, cwd: Path, input: str | None = None,
              **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*strangler_cmd(), *args], cwd=cwd, env=clean_env(**env),
                          capture_output=True, text=True, timeout=60, input=input,
                          check=False)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    path = tmp_path / "state" / "strangler.sqlite3"
    assert strangler("store", "init", "--db-path", str(path), cwd=tmp_path).returncode == 0
    done = strangler("rules", "apply", str(rules), "--reason", "setup", "--db-path", str(path),
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return path


def audit_actions(path: Path) -> list[str]:
    store = open_store(None, str(path))
    try:
        return [e.action for e in store.audit_log(100)]
    finally:
        store.close()


def kills(path: Path) -> set[str]:
    store = open_store(None, str(path))
    try:
        return set(store.kill_switches())
    finally:
        store.close()


@pytest.mark.parametrize("name", ["warrantys", "Warranties", "warranties "])
def test_kill_of_an_unknown_funnel_is_refused_with_a_suggestion(
    name: str, store_path: Path, tmp_path: Path,
) -> None:
    before = audit_actions(store_path)
    done = strangler("kill", "--funnel", name, "--reason", "INC-1", "--db-path",
                     str(store_path), cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "set" not in done.stdout
    assert "no funnel named" in done.stderr and "did you mean 'warranties'" in done.stderr
    assert kills(store_path) == set()
    assert audit_actions(store_path) == before


def test_kill_of_a_known_funnel_still_works(store_path: Path, tmp_path: Path) -> None:
    done = strangler("kill", "--funnel", "gift-cards", "--reason", "INC-1", "--db-path",
                     str(store_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert kills(store_path) == {"gift-cards"}


@pytest.mark.parametrize("command", ["kill", "unkill"])
def test_an_empty_funnel_is_refused_and_never_means_global(
    command: str, store_path: Path, tmp_path: Path,
) -> None:
    assert strangler("kill", "--reason", "INC-1", "--db-path", str(store_path),
                     cwd=tmp_path).returncode == 0
    before = audit_actions(store_path)
    done = strangler(command, "--funnel", "", "--reason", "x", "--db-path", str(store_path),
                     cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "--funnel" in done.stderr
    assert kills(store_path) == {"*"}  # the global switch is still set
    assert audit_actions(store_path) == before


def test_unkill_of_an_unset_switch_exits_1_and_audits_nothing(
    store_path: Path, tmp_path: Path,
) -> None:
    before = audit_actions(store_path)
    done = strangler("unkill", "--funnel", "warranties", "--reason", "x", "--db-path",
                     str(store_path), cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "not set" in done.stderr
    assert audit_actions(store_path) == before


def test_global_is_explicit_with_global_and_refused_beside_a_funnel(
    store_path: Path, tmp_path: Path,
) -> None:
    done = strangler("kill", "--global", "--funnel", "warranties", "--reason", "x",
                     "--db-path", str(store_path), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert kills(store_path) == set()
    done = strangler("kill", "--global", "--reason", "x", "--db-path", str(store_path),
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert kills(store_path) == {"*"}


@pytest.mark.parametrize("command", [
    ("kill", "--reason", "INC-1"),
    ("kill", "--funnel", "warranties", "--reason", "INC-1"),
    ("unkill", "--reason", "x"),
    ("ramp", "warranties", "--percent", "5", "--reason", "x", "--yes"),
    ("rules", "apply", str(REPO / "rules" / "checkout.yaml"), "--reason", "x"),
    ("status",),
    ("audit",),
])
def test_no_command_creates_a_store_where_there_is_none(
    command: tuple[str, ...], tmp_path: Path,
) -> None:
    """Run from a directory without var/: the default store is not there. Before, `kill`
    created an empty store there and printed success while the proxy kept routing."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = strangler(*command, cwd=elsewhere)
    assert done.returncode == 5, done.stdout + done.stderr
    assert "no control store" in done.stderr
    assert str(elsewhere / "var" / "strangler.sqlite3") in done.stderr
    assert not (elsewhere / "var").exists()
