"""The benchmark harness runs end to end: tiny durations, Python load generator, no nginx.

It starts real processes (a Python upstream, the aiohttp baseline, `strangler serve`) on
loopback, so it checks the wiring, the table and the JSON, never the figures.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TARGETS = ("direct", "baseline", "full")
LEVELS = (1, 8)


@pytest.mark.timeout(60)
def test_bench_harness_produces_a_table_for_every_target(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "loadtests.bench", "--duration", "0.5", "--warmup", "0.1",
         "-c", ",".join(map(str, LEVELS)), "--loadgen", "python", "--upstream", "python",
         "--nginx", "off", "--json-out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    table = result.stdout
    for target in TARGETS:
        for c in LEVELS:
            row = next((line.split() for line in table.splitlines()
                        if line.split()[:2] == [target, str(c)]), None)
            assert row is not None, f"no row for {target} c={c} in:\n{table}"
            req_s, p50, p99 = (float(x) for x in row[2:5])
            assert req_s > 0 and p50 > 0 and p99 >= p50, row
    assert "targets (full proxy vs the aiohttp baseline):" in table
    assert "c=1 p50 overhead over direct" in table

    report = json.loads(out.read_text())
    points = {(p["target"], p["concurrency"]): p for p in report["points"]}
    assert set(points) == {(t, c) for t in TARGETS for c in LEVELS}
    for point in points.values():
        assert point["requests"] > 0 and point["errors"] == 0 and point["non_2xx"] == 0, point
        assert math.isfinite(point["p50_ms"]) and math.isfinite(point["p99_ms"]), point
    # The full proxy really routed through a funnel rule of rules/checkout.yaml.
    assert "rule=warranties-pilot" in report["targets"]["full"]["sample"]["x-checkout-decision"]
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["c=1 p50 overhead over direct <= 0.3 ms"] in ("PASS", "FAIL")
    assert all(s in ("PASS", "FAIL", "N/A") for s in statuses.values())
