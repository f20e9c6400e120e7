"""The soak command runs the stack, reports rows and a summary, and passes when healthy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import REPO, clean_env

pytestmark = pytest.mark.e2e


def test_a_short_soak_reports_errors_memory_and_descriptors(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    result = subprocess.run(
        [sys.executable, "-m", "loadtests.soak", "--duration", "4", "--interval", "1",
         "--rate", "30", "--threads", "4", "--json-out", str(out), "--max-error-rate", "0"],
        check=False, capture_output=True, text=True, timeout=60, cwd=REPO, env=clean_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.lstrip().startswith("t (s)") for line in lines)
    assert "summary:" in result.stdout and lines[-1] == "PASS"
    report = json.loads(out.read_text())
    assert len(report["samples"]) >= 3 and report["errors"] == 0 and report["requests"] > 50
    for name in ("proxy", "core", "legacy"):
        rss, fds = report["samples"][-1]["processes"][name]
        assert rss > 10_000 and fds > 3  # KiB, descriptors: read from /proc
        assert report["growth"][name]["fd_growth"] is not None
