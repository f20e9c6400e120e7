"""The architecture as the code must keep it (docs/design.md, "Dependency rule").

Each module is imported in a fresh interpreter, and `sys.modules` tells what it pulled in.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PURE = ("control.decision", "control.bucketing", "control.merge", "guardrails.judge",
        "guardrails.stats", "guardrails.model", "guardrails.spec")
# servers, clients, stores and Redis: none of them belongs in a pure part
IMPURE = ("redis", "httpx", "httpcore", "aiohttp", "starlette", "uvicorn", "httptools",
          "sqlite3", "control.store", "proxy.app", "proxy.h1client", "admin")
CONTROL_PLANE = ("control.operations", "control.watcher", "control.status",
                 "control.rollout_driver", "control.killswitch")
DATA_PLANE = ("proxy.app", "proxy.h1client", "proxy.server_protocol", "proxy.runtime",
              "admin", "uvicorn", "starlette")


def imported_by(module: str) -> set[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    return set(json.loads(done.stdout))


def hits(modules: set[str], roots: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == r or m.startswith(r + ".") for r in roots))


@pytest.mark.parametrize("module", PURE)
def test_pure_parts_import_no_server_client_store_or_redis(module: str) -> None:
    assert hits(imported_by(module), IMPURE) == []


@pytest.mark.parametrize("module", CONTROL_PLANE)
def test_the_control_plane_loads_no_data_plane(module: str) -> None:
    assert hits(imported_by(module), DATA_PLANE) == []


def test_the_log_format_imports_no_other_package_of_the_project() -> None:
    """The core and the legacy stub use `logformat` without pulling in the proxy."""
    project = ("proxy", "control", "guardrails", "admin", "cli", "checkout_core",
               "legacy_stub", "shadow", "otelsetup")
    assert hits(imported_by("logformat"), project) == []
