"""The dashboard's pure parts: per-minute series and kill/unkill request parsing."""

from __future__ import annotations

import json

import pytest

from admin.access import is_dashboard_path
from admin.dashboard.actions import ApiError, parse_switch_request
from admin.dashboard.series import SeriesCache, arm_point, minute_starts
from admin.responses import json_bytes
from guardrails.model import LATENCY_BOUNDS_MS, N_LATENCY_BUCKETS, ArmStats, FunnelWindow

FUNNELS = frozenset({"warranties", "accessories"})


def buckets(**at: int) -> tuple[int, ...]:
    """A latency histogram with counts at bucket indexes (`b3=10`: 10 in bucket 3)."""
    counts = [0] * N_LATENCY_BUCKETS
    for name, n in at.items():
        counts[int(name[1:])] = n
    return tuple(counts)


class CountingSource:
    """A telemetry store that answers every minute with the same counts, and counts calls."""

    def __init__(self, core: ArmStats) -> None:
        self.core = core
        self.calls: list[tuple[float, float]] = []

    def window(self, funnel: str, since: float, until: float) -> FunnelWindow:
        self.calls.append((since, until))
        return FunnelWindow(funnel, self.core, ArmStats(), until - since)


def test_an_arm_point_holds_the_four_guardrail_rates():
    stats = ArmStats(requests=200, errors=5, latency_buckets=buckets(b5=100, b10=100),
                     checkout_units=40, converted_units=30, payment_attempts=32,
                     payment_successes=30)
    point = arm_point(stats)
    assert point["conversion"] == 0.75
    assert point["payment_success"] == 30 / 32
    assert point["error_rate"] == 0.025
    assert LATENCY_BOUNDS_MS[9] < point["p95_ms"] <= LATENCY_BOUNDS_MS[10]


def test_rates_are_at_most_one_as_the_judge_counts_them():
    stats = ArmStats(checkout_units=1, converted_units=2, payment_attempts=2,
                     payment_successes=3)
    assert arm_point(stats)["conversion"] == 1.0
    assert arm_point(stats)["payment_success"] == 1.0


def test_no_data_is_none_not_zero():
    assert arm_point(ArmStats()) == {
        "conversion": None, "payment_success": None, "p95_ms": None, "error_rate": None,
        "requests": 0, "checkouts": 0, "payment_attempts": 0}


def test_a_p95_beyond_the_last_bucket_is_reported_as_the_last_edge():
    stats = ArmStats(requests=10, latency_buckets=buckets(**{f"b{N_LATENCY_BUCKETS - 1}": 10}))
    assert arm_point(stats)["p95_ms"] == LATENCY_BOUNDS_MS[-1]


def test_minutes_are_aligned_oldest_first_with_the_current_one_last():
    assert minute_starts(3_600 * 10 + 75.5, 3) == [35_940, 36_000, 36_060]


def test_each_minute_is_one_window_that_does_not_reach_into_the_next():
    source = CountingSource(ArmStats(requests=1))
    SeriesCache(source).series("warranties", now=36_075.0, minutes=2)
    assert source.calls[0][0] == 36_000 and 36_059 < source.calls[0][1] < 36_060
    assert source.calls[1][0] == 36_060


def test_settled_minutes_are_computed_once_and_the_current_one_every_time():
    source = CountingSource(ArmStats(requests=3))
    cache = SeriesCache(source, settle_seconds=20)
    first = cache.series("warranties", now=36_075.0, minutes=60)
    assert len(first["points"]) == 60 and len(source.calls) == 60
    # 58 minutes had settled; the one that ended 15 s ago had not, nor the current one
    cache.series("warranties", now=36_076.0, minutes=60)
    assert len(source.calls) == 62
    cache.series("warranties", now=36_085.0, minutes=60)  # it ended 25 s ago: settled now
    assert len(source.calls) == 64
    cache.series("warranties", now=36_086.0, minutes=60)
    assert len(source.calls) == 65
    assert cache.series("warranties", now=36_086.0)["points"][-1]["core"]["requests"] == 3


@pytest.mark.parametrize(("body", "status", "fragment"), [
    (b"", 400, "JSON object"),
    (b"{", 400, "not JSON"),
    (b"[]", 400, "JSON object"),
    (b'{"funnel": "warranties"}', 422, "reason is required"),
    (b'{"funnel": "warranties", "reason": "  "}', 422, "reason is required"),
    (b'{"funnel": "warranties", "reason": 1}', 422, "reason must be a string"),
    (b'{"funnel": 3, "reason": "x"}', 422, "funnel must be a string"),
    (b'{"funnel": "hardware", "reason": "x"}', 422, "no funnel named 'hardware'"),
    (b'{"funnel": " ", "reason": "x"}', 422, "or be null for the global switch"),
    (b'{"reason": "x", "name": "a\\u0000b"}', 422, "name must be printable"),
    (json.dumps({"reason": "x" * 501}).encode(), 422, "500 characters"),
])
def test_invalid_switch_requests(body, status, fragment):
    with pytest.raises(ApiError) as caught:
        parse_switch_request(body, FUNNELS)
    assert caught.value.status == status
    assert fragment in caught.value.detail


@pytest.mark.parametrize(("body", "scope", "actor", "reason"), [
    ({"funnel": "warranties", "reason": " INC-1 "}, "warranties", "dashboard", "INC-1"),
    ({"funnel": None, "reason": "all out", "name": "ana"}, "*", "dashboard:ana", "all out"),
    ({"reason": "all out", "name": "  "}, "*", "dashboard", "all out"),
])
def test_valid_switch_requests(body, scope, actor, reason):
    request = parse_switch_request(json.dumps(body).encode(), FUNNELS)
    assert (request.scope, request.actor, request.reason) == (scope, actor, reason)


@pytest.mark.parametrize(("path", "owned"), [
    ("/dashboard", True), ("/dashboard/dashboard.js", True), ("//dashboard", True),
    ("/_strangler/api/status", True), ("/x/../_strangler/api/kill", True),
    ("/dashboards", False), ("/_strangler/healthz", False), ("/carts", False),
])
def test_dashboard_paths(path, owned):
    assert is_dashboard_path(path) is owned


def test_json_never_carries_infinity():
    assert json.loads(json_bytes({"bound": float("inf"), "xs": [float("nan"), 1.5]})) == {
        "bound": None, "xs": [None, 1.5]}


# -- the shadow parity panel's data ------------------------------------------------------------

SHADOW_RULES = """\
schema: 1
funnels:
  - name: warranties
    match: {header: warranties}
    salt: w1
    shadow: {share: 10, min_units: 300}
    rules:
      - {id: ie, countries: [IE], percent: 0, shadow: {share: 100}}
      - {id: rest, countries: '*', percent: 5}
  - name: hardware
    match: {header: hardware}
    salt: h1
    rules:
      - {id: all, countries: '*', percent: 0}
"""


def test_the_shadow_panel_reads_the_stored_summary_and_the_configuration(tmp_path):
    from admin.dashboard import reads
    from control.operations import apply_rules_text
    from control.status import status_data
    from control.store import open_store
    from shadow.report import store_summary

    store = open_store(None, str(tmp_path / "c.sqlite3"))
    apply_rules_text(store, SHADOW_RULES, source="t", actor="t", reason="t")
    assert reads.shadow(store) == {"at": None, "funnels": {}}
    funnels = {f["name"]: f["shadow"] for f in status_data(store)["funnels"]}
    assert funnels["warranties"]["lines"] == [
        ("warranties: shadow 10% of legacy-served units; all cart-building routes; parity "
         "needs 300 compared units"),
        ("warranties / rule ie: shadow 100% of legacy-served units; all cart-building "
         "routes; parity needs 300 compared units")]
    assert funnels["warranties"]["percent_by_rule"] == {"ie": 100, "rest": 10}
    assert funnels["warranties"]["units"] is None
    assert funnels["hardware"] == {"lines": [], "percent_by_rule": {"all": None},
                                   "units": None}
    units = {"compared": 300, "with_mismatch": 0, "parity": 1.0, "parity_interval": [0.99, 1]}
    store_summary(store, {"window_seconds": 3600.0, "alpha": 0.05,
                          "funnels": {"warranties": {"units": units, "routes": {}}}})
    assert reads.shadow(store)["funnels"]["warranties"]["units"] == units
    assert status_data(store)["funnels"][0]["shadow"]["units"] == units
    store.set_meta("shadow:report", "{not json")  # a torn write reads as no report
    assert reads.shadow(store) == {"at": None, "funnels": {}}
    store.close()
