"""The slowloris harness runs end to end with a few slow clients for a few seconds: it
checks the wiring and the report, never the figures (`docs/benchmarks.md` has those)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_the_slowloris_harness_reports_normal_requests_beside_slow_bodies(
    tmp_path: Path,
) -> None:
    out = tmp_path / "slowloris.json"
    result = subprocess.run(
        [sys.executable, "-m", "loadtests.slowloris", "--clients", "8", "--duration", "2",
         "--interval", "0.5", "--rate", "40", "--connections", "2", "--upstream", "python",
         "--json-out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=110, check=False,
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["clients"] == 8 and report["slow_connects"] >= 8
    assert report["requests"] > 20 and report["errors"] == 0, report
    assert report["p50_ms"] <= report["p99_ms"] <= report["max_ms"]
    assert "[PASS]" in result.stdout or "[FAIL]" in result.stdout
    assert "slow clients" in result.stdout and "p99" in result.stdout
