"""The shadow benchmark runs end to end: tiny durations, wrk when installed (else the Python
load generator), the Python upstream.

It starts real processes (the upstream, two `strangler serve`, one with a 100% shadow) on
loopback, so it checks the wiring, the probe, the tables and the JSON, never the figures.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOADGEN = "auto" if shutil.which("wrk") else "python"


def _run(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "loadtests.shadowbench", "--loadgen", LOADGEN,
         "--upstream", "python", *args],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "probe mirrored by shadow-on" in result.stderr, result.stderr[-3000:]
    return result.stdout


@pytest.mark.timeout(90)
def test_the_comparison_reports_both_proxies_their_ratios_and_the_mirror(
        tmp_path: Path) -> None:
    out = tmp_path / "shadow.json"
    table = _run("--rounds", "1", "--duration", "1", "--warmup", "0", "-c", "4",
                 "--json-out", str(out))

    rows = {line.split()[0]: line.split() for line in table.splitlines()
            if line.split()[:1] in (["shadow-off"], ["shadow-on"]) and line.split()[1] == "4"}
    assert set(rows) == {"shadow-off", "shadow-on"}, table
    for row in rows.values():
        req_s, p50, p99 = (float(x) for x in row[2:5])
        assert req_s > 0 and p50 > 0 and p99 >= p50, row
    assert "shadow on / off" in table and "mirror of shadow-on per point" in table
    assert "queue_full drops are expected" in table
    assert "c=32 not measured" in table  # the target is judged at c=32 only

    report = json.loads(out.read_text())
    assert {p["target"] for p in report["points"]} == {"shadow-off", "shadow-on"}
    assert all(p["errors"] == 0 and p["non_2xx"] == 0 for p in report["points"])
    ratios = report["ratios"]["4"]
    assert all(ratios[k] is not None and ratios[k] > 0 for k in ("rps", "p50", "p99"))
    assert report["probe"]["submitted"] == 1
    [mirror] = report["mirror"]
    assert mirror["submitted"] > 0 and mirror["rss_mb"] > 0
    # the mirror replayed what it accepted (a replay the busy machine timed out would be
    # dropped as `error`, not compared); the fake core answers like legacy: no mismatch
    assert 0 < mirror["compared"] <= mirror["sent"] <= mirror["submitted"]
    assert mirror["mismatched"] == 0
    assert mirror["submitted"] + sum(mirror["dropped"].values()) >= mirror["requests"]
    assert 0 <= mirror["live_compared"] <= mirror["compared"]


@pytest.mark.timeout(90)
def test_the_soak_samples_rss_and_the_mirror_counters(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    text = _run("--soak", "3", "--soak-interval", "1", "--soak-concurrency", "4",
                "--soak-sessions", "500", "--json-out", str(out))

    assert "after the load, the mirror drained" in text
    assert "proxy RSS: start" in text and "RSS growth over the second half" in text
    report = json.loads(out.read_text())
    samples = report["samples"]
    assert len(samples) >= 3  # t=0, at least one interval, after the drain
    assert all(s["rss_mb"] > 0 for s in samples)
    assert samples[-1]["requests"] > 0 and samples[-1]["queued"] == 0
    assert report["totals"]["compared"] > 0
    assert report["rss_mb"]["max"] >= report["rss_mb"]["start"] > 0
    # the soak replays as fast as the loop allows unless told otherwise (the bounds fill)
    assert report["config"]["mirror"]["max_busy"] == 1.0
