"""The locust scenario drives a staged rollout: its customers are enough for a verdict.

A shortened docs/cli.md "A staged rollout under load": `strangler up` with the demo rules
(rules/demo-rollout.yaml: warranties IE at 0 %, PT and FI at 50 %), guardrails sized for a
few dozen customers and a short hold, a rollout of IE started with `--yes`, and locust
headless as a subprocess. The rollout must advance past its first step on the monitor's
word, and locust must report no failure (402 declines are expected, not failures).
Bounded: locust runs at most LOCUST_SECONDS and is stopped once the rollout advanced.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import REPO, Up, spawn_up
from tests.support.processes import clean_env, stop

pytestmark = pytest.mark.e2e

LOCUST_SECONDS = 60
USERS = 30

# Every guardrail stays on, with limits wide enough for a verdict from a few dozen customers
# per arm: the test is about the pipeline (new units per customer, telemetry, monitor,
# rollout driver), not the statistics (tests/unit/guardrails). Latency is loose because the
# core shares a busy machine with locust and the proxy; a trip would stop the rollout.
TEST_GUARDRAILS: dict[str, Any] = {
    "alpha": 0.05,
    "min_samples": 20,
    "conversion": {"max_relative_drop": 0.6},
    "payment_success": {"max_absolute_drop": 0.3, "floor": 0.5},
    "latency_p95": {"max_ratio": 5, "ceiling_ms": None},
    "error_budget": {"slo": 0.99, "min_requests": 20,
                     "windows": [{"long": "5m", "short": "30s", "burn_rate": 14.4}]},
    "sample_ratio": {"p_value": 0.001},
    "trip_scope": "funnel",
}


def write_rules(path: Path) -> Path:
    data = yaml.safe_load((REPO / "rules" / "demo-rollout.yaml").read_text())
    data["guardrails"] = TEST_GUARDRAILS
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@contextmanager
def strangler_up(tmp: Path, rules: Path) -> Iterator[Up]:
    """`strangler up` on three free ports, its own --data-dir, a guardrail tick a second."""
    # the load comes from loopback, as a CDN's would (docs/reliability.md, Trust)
    env = clean_env(STRANGLER_TRUST_COUNTRY_HEADERS="always", STRANGLER_GUARD_INTERVAL="1",
                    STRANGLER_LOG_LEVEL="warning")
    data_dir = tmp / "up"
    data_dir.mkdir()
    proc, port = spawn_up(["--data-dir", str(data_dir), "--rules", str(rules)],
                          data_dir / "up.log", env)
    try:
        yield Up(f"http://127.0.0.1:{port}", port, data_dir, rules, proc)
    finally:
        stop(proc, 20)


def rollout_of(up: Up) -> dict[str, Any]:
    rows = json.loads(up.cli("rollout", "status", "--json").stdout)
    assert len(rows) == 1, rows
    return rows[0]


def stop_locust(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # locust stops its users, prints and writes stats
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_locust_customers_advance_a_staged_rollout(tmp_path: Path) -> None:
    rules = write_rules(tmp_path / "rollout-rules.yaml")
    with strangler_up(tmp_path, rules) as up:
        up.cli("rollout", "start", "warranties", "--country", "IE", "--steps", "1,5,25",
               "--hold", "10s", "--reason", "e2e: locust drives the rollout", "--yes")
        assert rollout_of(up)["state"] == "running"
        summary_file, log_file = tmp_path / "locust-summary.json", tmp_path / "locust.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
        with log_file.open("wb") as log:
            locust = subprocess.Popen(
                [sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py",
                 "--headless", "-u", str(USERS), "-r", str(USERS),
                 "-t", f"{LOCUST_SECONDS}s", "--host", up.url, "--only-summary",
                 "--funnel-mix", "warranties=1", "--rules-file", str(rules),
                 "--summary-json", str(summary_file)],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
            rollout: dict[str, Any] = {}
            load_started = time.monotonic()
            try:
                deadline = time.monotonic() + LOCUST_SECONDS + 15
                while time.monotonic() < deadline:
                    rollout = rollout_of(up)
                    if rollout["step_index"] >= 1 or rollout["state"] not in (
                            "running", "waiting"):
                        break
                    if locust.poll() is not None:  # its run is over: one last look
                        time.sleep(3)
                        rollout = rollout_of(up)
                        break
                    time.sleep(1)
            finally:
                waited = time.monotonic() - load_started
                stop_locust(locust)
        output = log_file.read_text(errors="replace")
        guard = up.cli("guard", "status", check=False).stdout
        assert rollout["step_index"] >= 1, (
            f"the rollout did not advance in {waited:.0f}s of load: {rollout['state']}: "
            f"{rollout['detail']}\n{guard}\n{output[-3000:]}")
        print(f"rollout advanced after {waited:.0f}s of load: {rollout['detail']}")
        assert rollout["state"] in ("running", "waiting", "done"), rollout
        assert any("guardrails pass: 1% -> 5%" in h["detail"] for h in rollout["history"])
        exported = yaml.safe_load(up.cli("rules", "export").stdout)
        warranties = next(f for f in exported["funnels"] if f["name"] == "warranties")
        ie = next(r for r in warranties["rules"] if r["countries"] == ["IE"])
        assert float(ie["percent"]) >= 5

    assert locust.returncode == 0, f"locust reported failures:\n{output[-3000:]}"
    summary = json.loads(summary_file.read_text())
    outcomes = summary["outcomes"]
    assert "aborted (failure)" not in outcomes, outcomes
    assert summary["customers"] >= 100, summary
    # every customer a new unit: none is held to a backend by an earlier checkout
    assert not any(" STICKY" in reason for reason in summary["reasons"]), summary["reasons"]
    # declines are outcomes, not failures: some customers met one, and locust passed
    assert outcomes.get("declined, gave up", 0) + outcomes.get("placed after a decline", 0) > 0
    assert summary["funnels"]["warranties"]["conversion"]["core"]["checkouts_started"] > 0
