"""The kill-switch propagation benchmark runs end to end (tiny trial count)."""

from __future__ import annotations

import pytest

from loadtests import killswitch


@pytest.mark.parametrize("mode", ["embedded", "redis"])
def test_propagation_benchmark_measures_every_replica(mode, redis_clean_url):
    result = killswitch.run_mode(mode, replicas=2, trials=2, redis_url=redis_clean_url)
    assert result["trials"] == 2
    assert 0 < result["p50"] <= result["max"] < 5000
    assert result["cli_ms"] > 0
