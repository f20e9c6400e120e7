"""The shadow parity gate of a staged rollout inside a running proxy: the rollout waits at
0 % while too few units were compared, and the monitor applies its first step once the
parity the proxy measured meets the bar (issue 17)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import httpx
import pytest

from control import rollout
from control.rules_loader import load_rules_text
from tests.integration.conftest import RULES

T = TypeVar("T")
# The echo backends answer with the request's headers, which the mirror does not replay
# (no cookie, no forwarding headers): ignored, the rest of the answers match.
SHADOWED = RULES.replace(
    "    salt: w1\n", "    salt: w1\n    shadow: {share: 100, ignore: [headers]}\n").replace(
    "schema: 1\n", "schema: 1\nguardrails:\n  min_samples: 30\n")
DE = {"X-Checkout-Funnel": "warranties", "X-Country": "DE"}  # de-none: 0 %, legacy


def wait_for(check: Callable[[], T | None], within: float) -> T:
    deadline = time.monotonic() + within
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within}s")
        time.sleep(0.1)


def test_a_gated_rollout_waits_for_parity_then_the_monitor_applies_its_first_step(
        make_stack) -> None:
    stack = make_stack(rules=SHADOWED, guard_interval=0.2)
    db = ["--db-path", str(stack.settings.db_path)]
    started = subprocess.run(
        [sys.executable, "-m", "cli.main", "rollout", "start", "warranties", "--country", "DE",
         "--steps", "10,50", "--hold", "1h", "--require-parity", "99", "--parity-min-units",
         "3", "--reason", "parity first", "--yes", *db],
        capture_output=True, text=True, timeout=60, check=False)
    assert started.returncode == 0, started.stderr
    [plan] = rollout.all_rollouts(stack.store)

    def waiting() -> str | None:
        current = rollout.load(stack.store, plan.id)
        assert current is not None
        return current.detail if "0 of 3" in current.detail else None

    assert wait_for(waiting, within=10) == (
        "waiting for shadow parity: no units compared yet (0 of 3), need 99%")
    assert stack.store.active_rules().version == 1  # nothing applied while it waits
    for i in range(3):  # three legacy-served units, replayed to the core and compared
        r = httpx.post(stack.url + "/carts", headers={**DE, "X-Checkout-Session": f"unit-{i}-x"})
        assert r.headers["x-checkout-backend"] == "legacy"

    def first_step() -> rollout.Rollout | None:
        current = rollout.load(stack.store, plan.id)
        return current if current is not None and current.step_index == 0 else None

    moved = wait_for(first_step, within=15)
    assert moved.state is rollout.State.RUNNING
    assert moved.detail == "shadow parity 100% over 3 units meets 99%: first step 10%"
    active = stack.store.active_rules()
    assert active.version == 2
    de = load_rules_text(active.text, "2").funnel("warranties").rule_for("DE")
    assert (de.id, de.basis_points) == ("de-none", 1000)
