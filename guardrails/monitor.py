"""The guardrail monitor: judge every funnel's core against legacy, trip on failure.

Runs inside the proxy. With Redis, one replica at a time holds the monitor lease, so a trip
is decided once; every replica obeys it through the control store (pub/sub, then polling).

Each tick, for every funnel with guardrails:
- the always-valid comparisons use counts since the funnel's monitoring epoch began (its
  routing last changed, or its kill switch was last cleared);
- the error budget uses the SRE burn-rate windows, trailing from now, and whether the core
  could be reached over its grace period (failovers during a restart burn nothing);
- a failure sets the kill switch (funnel or global, as configured) with the evidence,
  unless it is already set; the switch stays latched until a person clears it;
- the report of the tick goes to the caller, which adds the rollouts (`control.rollout_driver`)
  and stores it for `strangler guard status` (`guardrails.report`).
Missing telemetry never trips and never passes: the report says so and an alert is raised.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any, Protocol

from control import operations
from control.decision import GLOBAL_SCOPE, is_killed
from control.rules import Funnel, RuleSet
from control.store import ControlStore, StoreUnavailable
from guardrails.judge import FunnelJudgement, judge_funnel
from guardrails.model import Verdict
from guardrails.report import REPORT_KEY
from guardrails.telemetry import TelemetryStore
from guardrails.waiting import RECENT_SECONDS, time_to_verdict

log = logging.getLogger("strangler.guardrails")

TRAFFIC_WINDOW = 60.0
MONITOR_ACTOR = "guardrail-monitor"
VERDICT_VALUE = {Verdict.PASS: 1, Verdict.INSUFFICIENT: 0, Verdict.FAIL: -1}


def funnel_digest(funnel: Funnel) -> str:
    """Changes when the funnel's routing changes: a new monitoring epoch begins."""
    parts = [funnel.salt] + [
        f"{r.id}|{sorted(r.countries) if r.countries else '*'}|{r.basis_points}"
        for r in funnel.rules
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def expected_core_share(funnel: Funnel, rule_units: dict[str, dict[str, int]]) -> float | None:
    """The core share the rules ask for, weighted by where rule-routed units came from."""
    totals: dict[str, int] = {}
    for per_country in rule_units.values():
        for country, n in per_country.items():
            totals[country] = totals.get(country, 0) + n
    units = sum(totals.values())
    if units == 0:
        return None
    expected = 0.0
    for country, n in totals.items():
        rule = funnel.rule_for(None if country == "-" else country)
        expected += n * (rule.basis_points / 10_000 if rule else 0.0)
    return expected / units


class Gauge(Protocol):
    def set(self, value: float) -> None: ...


class LabeledGauge(Protocol):
    def labels(self, *values: str) -> Gauge: ...


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class LabeledCounter(Protocol):
    def labels(self, *values: str) -> Counter: ...


class GuardMetrics(Protocol):
    """The Prometheus metrics the monitor exports (`proxy.metrics.ProxyMetrics` has them)."""

    @property
    def guard_telemetry_up(self) -> Gauge: ...

    @property
    def guard_verdict(self) -> LabeledGauge: ...

    @property
    def guard_estimate(self) -> LabeledGauge: ...

    @property
    def guard_trips(self) -> LabeledCounter: ...


Alert = Callable[[dict[str, Any]], None]
Kill = Callable[..., object]
Judge = Callable[..., FunnelJudgement]


def no_alert(payload: dict[str, Any]) -> None:
    """The alert when no webhook is configured: the log line is the alert."""


class GuardrailMonitor:
    """Judges every funnel with guardrails on each `tick` and trips on a failure.

    It takes what it uses: the telemetry to judge, the control store (monitoring epochs, and
    where `kill` writes a trip), the routing state it judges (`rules`, `kills`), a judge, a
    kill function, the metrics to export and an alert for trips and missing telemetry.
    """

    def __init__(
        self, *, store: ControlStore, telemetry: TelemetryStore,
        rules: Callable[[], RuleSet | None], kills: Callable[[], frozenset[str]],
        metrics: GuardMetrics, alert: Alert = no_alert, judge: Judge = judge_funnel,
        kill: Kill = operations.kill,
    ) -> None:
        self.store = store
        self.telemetry = telemetry
        self.rules = rules
        self.kills = kills
        self.metrics = metrics
        self.alert = alert
        self.judge = judge
        self.kill = kill
        self.id = uuid.uuid4().hex[:12]
        self.last_report: dict[str, Any] = {}
        self._telemetry_ok = True

    # -- one tick ------------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        rules = self.rules()
        report: dict[str, Any] = {"at": now, "monitor": self.id, "funnels": {},
                                  "rules_version": rules.version if rules else None,
                                  "telemetry": "ok"}
        if rules is not None:
            try:
                report["traffic"] = self._traffic(rules, now)
                for funnel in rules.funnels:
                    if funnel.guardrails is not None:
                        report["funnels"][funnel.name] = self._check(rules, funnel, now)
            except StoreUnavailable as exc:
                report["telemetry"] = "unavailable"
                report["error"] = str(exc)
                log.error("guardrails: telemetry unavailable, rollouts freeze, no trip: %s", exc)
        telemetry_ok = report["telemetry"] == "ok"
        self.metrics.guard_telemetry_up.set(1 if telemetry_ok else 0)
        if not telemetry_ok and self._telemetry_ok:
            self.alert({"event": "guardrail.telemetry_unavailable", "at": now,
                        "error": report.get("error")})
        self._telemetry_ok = telemetry_ok
        self.last_report = report
        return report

    def _traffic(self, rules: RuleSet, now: float) -> dict[str, dict[str, dict[str, float]]]:
        """Requests per second per funnel, country and backend over the last minute."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for funnel in rules.funnels:
            per_country = self.telemetry.countries(funnel.name, now - TRAFFIC_WINDOW, now)
            out[funnel.name] = {
                country: {arm: round(stats.requests / TRAFFIC_WINDOW, 3)
                          for arm, stats in arms.items()}
                for country, arms in per_country.items()
            }
        return out

    def epoch_start(self, funnel: Funnel, now: float) -> float:
        store = self.store
        key = f"guard:epoch:{funnel.name}"
        digest = funnel_digest(funnel)
        raw = store.get_meta(key)
        epoch = json.loads(raw) if raw else None
        if epoch is None or epoch.get("digest") != digest:
            # The first epoch of a funnel starts when its rules were applied (traffic may
            # have come before the monitor's first tick); a later change starts one now.
            active = store.active_rules() if epoch is None else None
            start = min(active.applied_at, now) if active is not None else now
            epoch = {"digest": digest, "start": start}
            store.set_meta(key, json.dumps(epoch))
        cleared = [store.get_meta(f"unkilled_at:{s}") for s in (funnel.name, GLOBAL_SCOPE)]
        # Counters are whole buckets: the epoch after an unkill starts at the next bucket's
        # edge, so the failures that tripped the switch (maybe in the same bucket as the
        # unkill) never count again. At most one bucket of fresh traffic is left out.
        size = self.telemetry.bucket_seconds
        return max([float(epoch["start"]),
                    *(math.ceil(float(c) / size) * size for c in cleared if c)])

    def _check(self, rules: RuleSet, funnel: Funnel, now: float) -> dict[str, Any]:
        spec = funnel.guardrails
        assert spec is not None
        telemetry = self.telemetry
        since = self.epoch_start(funnel, now)
        cumulative = telemetry.window(funnel.name, since, now)
        # Burn windows trail from now but never reach back past the epoch: errors from
        # before a person cleared the switch must not trip it again.
        burn = {
            seconds: telemetry.window(funnel.name, max(now - seconds, since), now)
            for seconds in spec.burn_window_seconds()
        }
        share = expected_core_share(funnel, telemetry.rule_units(funnel.name, since, now))
        reach = None
        if spec.error_budget is not None:  # enough past to see a whole grace period
            horizon = spec.error_budget.unreachable_grace + 3 * telemetry.bucket_seconds
            reach = telemetry.reach(funnel.name, max(now - horizon, since), now)
        judgement = self.judge(spec, cumulative, burn, share, reach, now)
        self._export(funnel.name, judgement)
        entry: dict[str, Any] = {
            "verdict": judgement.verdict.value, "trips": judgement.trips,
            "sample_ratio_mismatch": judgement.sample_ratio_mismatch, "since": since,
            "configured_core_share": share,
            "guardrails": self._with_waits(funnel, judgement, now),
            "killed": is_killed(self.kills(), funnel.name),
        }
        if judgement.trips and not entry["killed"]:
            entry["tripped"] = self._trip(rules, funnel, judgement, entry, now)
        return entry

    def _with_waits(self, funnel: Funnel, judgement: FunnelJudgement, now: float) -> list[
        dict[str, Any]
    ]:
        """The results, each insufficient one with what it lacks and when it may have it
        at the last five minutes' rate (`waiting`)."""
        out = [asdict(r) for r in judgement.results]
        if any(r.verdict is Verdict.INSUFFICIENT for r in judgement.results):
            # the last five minutes, or less when monitoring began since (rates would be
            # diluted by minutes without traffic), but never under half a minute
            since = self.epoch_start(funnel, now)
            seconds = max(30.0, min(RECENT_SECONDS, now - since))
            recent = self.telemetry.window(funnel.name, now - seconds, now)
            recent = replace(recent, seconds=seconds)
            for data, result in zip(out, judgement.results, strict=True):
                data["waiting"] = time_to_verdict(result, recent)
        return out

    def _export(self, funnel: str, judgement: FunnelJudgement) -> None:
        m = self.metrics
        for r in judgement.results:
            m.guard_verdict.labels(funnel, r.name).set(VERDICT_VALUE[r.verdict])
            for arm, value in (("core", r.core_estimate), ("legacy", r.legacy_estimate)):
                if value is not None:
                    m.guard_estimate.labels(funnel, r.name, arm).set(value)

    # -- the trip ------------------------------------------------------------------------------

    def _trip(
        self, rules: RuleSet, funnel: Funnel, judgement: FunnelJudgement, entry: dict[str, Any],
        now: float,
    ) -> dict[str, Any]:
        spec = funnel.guardrails
        assert spec is not None
        failed = [r.name for r in judgement.results if r.verdict is Verdict.FAIL]
        scope = funnel.name if spec.trip_scope == "funnel" else None
        evidence = {
            "funnel": funnel.name, "failed": failed, "rules_version": rules.version,
            "at": now, "since": entry["since"], "guardrails": entry["guardrails"],
            "configured_core_share": entry["configured_core_share"],
        }
        reason = f"guardrail tripped on {funnel.name}: {', '.join(failed)}"
        self.kill(self.store, scope, actor=MONITOR_ACTOR, reason=reason, evidence=evidence)
        for name in failed:
            self.metrics.guard_trips.labels(funnel.name, name).inc()
        log.critical("%s (scope %s)", reason, scope or GLOBAL_SCOPE)
        self.alert({"event": "guardrail.tripped", "scope": scope or GLOBAL_SCOPE,
                    "reason": reason, "evidence": evidence})
        return {"scope": scope or GLOBAL_SCOPE, "reason": reason}


__all__ = [
    "REPORT_KEY",
    "GuardMetrics",
    "GuardrailMonitor",
    "expected_core_share",
    "funnel_digest",
]
