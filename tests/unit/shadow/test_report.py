"""Aggregating comparisons: rates with intervals, examples, noise, parity, the gate."""

from __future__ import annotations

import json
from typing import Any

import pytest

from guardrails.stats import bernoulli_cs
from shadow.compare import REDACTED, FieldResult, compare
from shadow.report import (
    OTHER_FIELD,
    MemoryShadowReport,
    ShadowRecorder,
    parity_gate,
    read_summary,
    store_summary,
    summarize,
    unit_digest,
)

ROUTE = "POST /carts/{cart_id}/items"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def results(tax_core: int = 100, email_core: str = "a@b.example",
            stamp: str | None = None) -> list[FieldResult]:
    legacy = {"id": "lg_1", "tax": 100, "total": 1100, "email": "a@b.example"}
    core = {"id": "co_1", "tax": tax_core, "total": 1100, "email": email_core}
    if stamp is not None:
        legacy["token"], core["token"] = "t-legacy", stamp
        legacy["session_ref"], core["session_ref"] = "r-legacy", stamp
    return compare(201, legacy, 201, core, ids={"lg_1": "co_1"})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def report(clock: Clock) -> MemoryShadowReport:
    return MemoryShadowReport(clock=clock)


def record(report: MemoryShadowReport, clock: Clock,
           observations: list[tuple[str, str, str, list[FieldResult]]]) -> None:
    recorder = ShadowRecorder(clock=clock)
    for funnel, unit, route, res in observations:
        recorder.observe(funnel, unit, route, res, ("lg_1", "co_1"))
    report.add(recorder.drain())


def test_counts_per_route_and_field_with_intervals(report: MemoryShadowReport,
                                                   clock: Clock) -> None:
    record(report, clock, [("hw", f"u{i}", ROUTE, results(tax_core=99 if i < 3 else 100))
                           for i in range(10)])
    summary = report.summary()
    funnel = summary["funnels"]["hw"]
    route = funnel["routes"][ROUTE]
    assert (route["comparisons"], route["mismatches"]) == (10, 3)
    assert (funnel["comparisons"], funnel["mismatches"]) == (10, 3)
    tax = route["fields"]["tax"]
    assert (tax["comparisons"], tax["mismatches"], tax["mismatch_rate"]) == (10, 3, 0.3)
    ci = bernoulli_cs(3, 10, 0.05)
    assert tax["interval"] == [ci.lower, ci.upper]
    assert tax["money"] is True and tax["noise"] is False
    assert route["fields"]["total"]["mismatches"] == 0
    assert next(iter(route["fields"])) == "tax"  # most mismatches first
    json.dumps(summary)  # JSON-ready


def test_units_parity_is_the_share_of_units_without_any_mismatch(
        report: MemoryShadowReport, clock: Clock) -> None:
    obs = [("hw", f"u{i}", ROUTE, results()) for i in range(8)]
    obs += [("hw", "u0", ROUTE, results(tax_core=1))]  # u0 had a mismatch once
    obs += [("hw", "u1", "GET /carts/{cart_id}", results())]
    record(report, clock, obs)
    units = report.summary()["funnels"]["hw"]["units"]
    assert (units["compared"], units["with_mismatch"], units["parity"]) == (8, 1, 7 / 8)
    lower, upper = units["parity_interval"]
    assert lower < 7 / 8 < upper


def test_examples_are_few_newest_first_and_redacted(report: MemoryShadowReport,
                                                    clock: Clock) -> None:
    for i in range(6):
        clock.now += 1
        record(report, clock, [("hw", "u", ROUTE, results(tax_core=i, email_core="x@y.example"))])
    fields = report.summary()["funnels"]["hw"]["routes"][ROUTE]["fields"]
    shown = fields["tax"]["examples"]
    assert [e["core"] for e in shown] == [5, 4, 3]
    assert shown[0] | {"at": 0} == {"field": "tax", "where": "tax", "kind": "money",
                                    "legacy": 100, "core": 5, "route": ROUTE, "at": 0,
                                    "legacy_id": "lg_1", "core_id": "co_1"}
    email = fields["email"]["examples"][0]
    assert email["legacy"] == email["core"] == REDACTED
    assert "x@y.example" not in json.dumps(report.summary())


def test_a_field_differing_every_time_is_flagged_noise_unless_it_is_money(
        report: MemoryShadowReport, clock: Clock) -> None:
    record(report, clock, [("hw", f"u{i}", ROUTE, results(tax_core=1, stamp=f"s{i}"))
                           for i in range(25)])
    fields = report.summary()["funnels"]["hw"]["routes"][ROUTE]["fields"]
    assert fields["session_ref"]["noise"] is True
    assert "add it to shadow.ignore" in fields["session_ref"]["hint"]
    assert fields["tax"]["mismatch_rate"] == 1.0 and fields["tax"]["noise"] is False
    assert fields["tax"]["hint"] is None


def test_noise_needs_enough_comparisons(report: MemoryShadowReport, clock: Clock) -> None:
    record(report, clock, [("hw", f"u{i}", ROUTE, results(stamp=f"s{i}")) for i in range(5)])
    fields = report.summary()["funnels"]["hw"]["routes"][ROUTE]["fields"]
    assert fields["session_ref"]["noise"] is False
    fields = summarize(report.data(), noise_min=5)["funnels"]["hw"]["routes"][ROUTE]["fields"]
    assert fields["session_ref"]["noise"] is True


def test_distinct_fields_per_route_are_bounded(clock: Clock) -> None:
    recorder = ShadowRecorder(max_fields_per_route=3, clock=clock)
    many = [FieldResult(f"f{i}", f"f{i}", True, 1, 1, "value") for i in range(10)]
    recorder.observe("hw", "u", ROUTE, many)
    batch = recorder.drain()
    assert {k[2] for k in batch.counters} == {"", "f0", "f1", "f2", OTHER_FIELD}
    assert batch.counters[("hw", ROUTE, OTHER_FIELD)] == [7, 0]


def test_examples_per_route_are_bounded_in_a_batch(clock: Clock) -> None:
    recorder = ShadowRecorder(examples_per_route=4, clock=clock)
    for i in range(10):
        recorder.observe("hw", "u", ROUTE, results(tax_core=i))
    batch = recorder.drain()
    assert [e["core"] for e in batch.examples[("hw", ROUTE)]] == [6, 7, 8, 9]


def test_units_are_kept_as_digests(clock: Clock) -> None:
    recorder = ShadowRecorder(clock=clock)
    recorder.observe("hw", "u_secret_session", ROUTE, results())
    batch = recorder.drain()
    assert list(batch.units["hw"]) == [unit_digest("u_secret_session")]
    assert "u_secret_session" not in json.dumps(batch.units)


def test_drops_are_counted_per_funnel_and_reason(report: MemoryShadowReport,
                                                 clock: Clock) -> None:
    recorder = ShadowRecorder(clock=clock)
    recorder.dropped("hw", "queue_full")
    recorder.dropped("hw", "queue_full")
    recorder.dropped("hw", "unmapped")
    report.add(recorder.drain())
    assert report.summary()["funnels"]["hw"]["dropped"] == {"queue_full": 2, "unmapped": 1}


def test_old_buckets_leave_the_window_and_the_retention(report: MemoryShadowReport,
                                                        clock: Clock) -> None:
    record(report, clock, [("hw", "old", ROUTE, results(tax_core=1))])
    clock.now += 2 * 3600
    record(report, clock, [("hw", "new", ROUTE, results())])
    assert report.summary(window=3600)["funnels"]["hw"]["routes"][ROUTE]["mismatches"] == 0
    assert report.summary()["funnels"]["hw"]["routes"][ROUTE]["mismatches"] == 1
    units = report.summary(window=3600)["funnels"]["hw"]["units"]
    assert (units["compared"], units["with_mismatch"]) == (1, 0)
    clock.now += 25 * 3600
    assert report.summary()["funnels"] == {}


def test_units_per_funnel_are_bounded(clock: Clock) -> None:
    report = MemoryShadowReport(max_units=5, clock=clock)
    record(report, clock, [("hw", f"u{i}", ROUTE, results()) for i in range(20)])
    assert report.summary()["funnels"]["hw"]["units"]["compared"] == 5


def test_filters_and_detail_levels(report: MemoryShadowReport, clock: Clock) -> None:
    record(report, clock, [("hw", "u", ROUTE, results()),
                           ("hw", "u", "GET /carts/{cart_id}", results()),
                           ("acc", "v", ROUTE, results())])
    assert set(report.summary(funnel="hw")["funnels"]) == {"hw"}
    only = report.summary(funnel="hw", route=ROUTE)["funnels"]["hw"]["routes"]
    assert set(only) == {ROUTE}
    brief = report.summary(fields=False)["funnels"]["hw"]["routes"][ROUTE]
    assert "fields" not in brief and brief["comparisons"] == 1
    no_examples = report.summary(examples=False)["funnels"]["hw"]["routes"][ROUTE]["fields"]
    assert "examples" not in no_examples["tax"]


def test_reset_forgets_a_funnel(report: MemoryShadowReport, clock: Clock) -> None:
    record(report, clock, [("hw", "u", ROUTE, results(tax_core=1)),
                           ("acc", "v", ROUTE, results())])
    report.reset("hw")
    assert set(report.summary()["funnels"]) == {"acc"}
    report.reset()
    assert report.summary()["funnels"] == {}


@pytest.mark.parametrize(("compared", "bad", "bar", "min_units", "met", "words"), [
    (50, 0, 99.9, 100, False, "waiting for compared units: 50 of 100"),
    (1000, 0, 99.9, 100, True, "parity 100.000% >= 99.900% over 1000 units"),
    (1000, 2, 99.9, 100, False, "parity 99.800% < 99.900% over 1000 units"),
    (1000, 1, 99.9, 100, True, ">="),
])
def test_the_parity_gate(report: MemoryShadowReport, clock: Clock, compared: int, bad: int,
                         bar: float, min_units: int, met: bool, words: str) -> None:
    record(report, clock, [("hw", f"u{i}", ROUTE, results(tax_core=1 if i < bad else 100))
                           for i in range(compared)])
    gate = parity_gate(report.summary(fields=False), "hw", bar, min_units)
    assert gate.met is met
    assert words in gate.reason
    assert gate.units == compared


def test_the_gate_of_an_unknown_funnel_waits() -> None:
    gate = parity_gate({"funnels": {}}, "hw", 99.0, 10)
    assert (gate.met, gate.units, gate.parity) == (False, 0, None)


class Meta:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def get_meta(self, key: str) -> str | None:
        return self.data.get(key)

    def set_meta(self, key: str, value: str) -> None:
        self.data[key] = value


def test_the_summary_round_trips_through_the_control_store(report: MemoryShadowReport,
                                                           clock: Clock) -> None:
    meta = Meta()
    assert read_summary(meta) == {}
    record(report, clock, [("hw", "u", ROUTE, results())])
    summary = report.summary()
    store_summary(meta, summary)
    stored: dict[str, Any] = read_summary(meta)
    assert stored["funnels"] == json.loads(json.dumps(summary["funnels"]))
    assert "at" in stored
