"""Control commands load the control plane only: no data plane, server or dashboard.

Each command runs in a fresh interpreter (a module imported by an earlier test would
otherwise hide what the command itself imports); the test reads `sys.modules` after it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DATA_PLANE = ("proxy.app", "proxy.h1client", "proxy.server_protocol", "proxy.runtime",
              "uvicorn", "admin", "starlette", "httptools")
# (pydantic itself is loaded by typer to convert parameters, and yaml by kill to read the
# funnel names of the active rules: neither is the rules parser)
RULES_PARSER = ("control.rules_loader", "control.rules_schema", "pycountry")

PROBE = """
import json, sys
from cli.main import app
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    print(json.dumps(sorted(sys.modules)), file=sys.__stderr__)
"""


def modules_after(*argv: str, cwd: Path) -> set[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def loaded(modules: set[str], roots: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in roots or m in roots)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "strangler.sqlite3"
    subprocess.run([sys.executable, "-m", "cli.main", "store", "init", "--db-path", str(path)],
                   check=True, capture_output=True, timeout=60)
    rules = Path(__file__).resolve().parents[2] / "rules" / "checkout.yaml"
    subprocess.run([sys.executable, "-m", "cli.main", "rules", "apply", str(rules),
                    "--reason", "setup", "--db-path", str(path)], check=True,
                   capture_output=True, timeout=60)
    return path


@pytest.mark.parametrize("command", [
    ("kill", "--reason", "INC-1 test"),
    ("kill", "--funnel", "warranties", "--reason", "INC-1 test"),
    ("unkill", "--reason", "fixed"),
    ("audit",),
    ("rollout", "status"),
    ("guard", "status"),
    ("shadow", "status"),
    ("shadow", "diff", "--funnel", "warranties"),
])
def test_control_commands_load_no_data_plane(command: tuple[str, ...], store_path: Path,
                                             tmp_path: Path) -> None:
    modules = modules_after(*command, "--db-path", str(store_path), cwd=tmp_path)
    assert "control.store" in modules  # the probe saw the command run
    assert loaded(modules, DATA_PLANE) == []


def test_kill_does_not_load_the_rules_parser(store_path: Path, tmp_path: Path) -> None:
    modules = modules_after("kill", "--reason", "INC-1", "--db-path", str(store_path),
                            cwd=tmp_path)
    assert "control.killswitch" in modules
    assert loaded(modules, RULES_PARSER) == []


def test_help_loads_neither_data_plane_nor_rules_parser(tmp_path: Path) -> None:
    modules = modules_after("--help", cwd=tmp_path)
    assert "cli.main" in modules
    assert loaded(modules, DATA_PLANE + RULES_PARSER) == []
