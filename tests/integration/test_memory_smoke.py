"""The memory harness runs end to end for a few seconds (Python load generator): it checks
the wiring and the report, never the figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests import bench

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(90)
def test_memory_harness_samples_the_proxy_under_new_units(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    result = subprocess.run(
        [sys.executable, "-m", "loadtests.memory", "--duration", "3", "--interval", "1",
         "--loadgen", "python", "-c", "4", "--json-out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=80, check=False,
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads(out.read_text())
    samples = report["samples"]
    assert len(samples) >= 3
    assert samples[-1]["requests"] > 0 and samples[-1]["errors"] == 0, samples[-1]
    assert all(s["rss_mb"] > 10 and s["fds"] > 0 for s in samples)
    assert [s["requests"] for s in samples] == sorted(s["requests"] for s in samples)
    assert "peak RSS" in result.stdout and "each a new unit" in result.stdout


def test_bench_takes_a_list_of_worker_counts() -> None:
    assert bench.parse_args(["--workers", "1,2"]).workers == [1, 2]
    assert bench.parse_args([]).workers == []
    for bad in ("x", "0"):
        with pytest.raises(SystemExit):
            bench.parse_args(["--workers", bad])
