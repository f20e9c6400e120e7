"""The kill-latency benchmark runs end to end (a couple of trials per mode, light load).

It checks the wiring and the report, never the figures against the targets.
"""

from __future__ import annotations

import json

import pytest

from loadtests import killswitch

REPLICAS = 3
TRIALS = 2


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["embedded", "redis"])
def test_kill_latency_benchmark_measures_every_replica(mode, redis_clean_url):
    result = killswitch.run_mode(
        mode, replicas=REPLICAS, trials=TRIALS, redis_url=redis_clean_url,
        propagation_trials=TRIALS, load_rate=20, load_clients=2)

    kill = result["kill"]
    assert len(kill["trials"]) == TRIALS
    for trial in [*kill["trials"], kill["warmup"]]:
        assert len(trial["replicas_ms"]) == REPLICAS  # every replica served legacy
        assert all(0 < t <= trial["total_ms"] for t in trial["replicas_ms"])
        assert trial["total_ms"] == pytest.approx(max(trial["replicas_ms"]))
        # both phases: the CLI process, then what is left until the last replica obeyed
        assert 0 < trial["cli_exit_ms"] < 30_000
        assert trial["cli_exit_ms"] + trial["exit_to_last_ms"] == pytest.approx(
            trial["total_ms"])
        assert 0 < trial["spawn_to_write_ms"] < trial["cli_exit_ms"]
        assert trial["spawn_to_write_ms"] + trial["write_to_last_ms"] == pytest.approx(
            trial["total_ms"])
        assert trial["cli_cpu_ms"] > 0
    for phase in killswitch.PHASES:
        summary = kill[phase]
        assert summary["n"] == TRIALS and summary["p99_is_max"], (phase, summary)
        assert summary["min"] <= summary["p50"] <= summary["p99"] == summary["max"]
    assert kill["total_ms"]["p50"] > 0

    propagation = result["propagation"]
    assert len(propagation["trials"]) == TRIALS
    assert all(len(t["replicas_ms"]) == REPLICAS and t["write_to_last_ms"] > 0
               for t in propagation["trials"])

    load = result["load"]
    assert load["requests"] > 0 and load["errors"] == 0, load
    assert set(load["backends"]) <= {"core", "legacy"}, load

    check = result["check"]
    assert check["status"] in ("PASS", "FAIL")
    assert check["target_ms"] == killswitch.TARGETS_MS[mode]

    table = killswitch.render([result])
    row = next(line.split() for line in table.splitlines() if line.split()[:1] == [mode])
    assert row[1] == str(TRIALS) and row[-1] == check["status"], table
    assert "max (n<100)" in table and "CLI exit -> last replica" in table
    json.dumps(result)  # --json can print it


def test_p99_is_the_max_below_100_and_a_rank_above():
    assert killswitch.summarize([3.0, 1.0, 2.0])["p99"] == 3.0
    values = [float(v) for v in range(1, 201)]
    summary = killswitch.summarize(values)
    assert summary["p99"] == 198.0 and not summary["p99_is_max"]
    assert summary["p50"] == 100.5
