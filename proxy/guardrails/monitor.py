"""The guardrail monitor: judge every funnel's core against legacy, trip on failure.

Runs inside the proxy. With Redis, one replica at a time holds the monitor lease, so a trip
is decided once; every replica obeys it through the control store (pub/sub, then polling).

Each tick, for every funnel with guardrails:
- the always-valid comparisons use counts since the funnel's monitoring epoch began (its
  routing last changed, or its kill switch was last cleared);
- the error budget uses the SRE burn-rate windows, trailing from now;
- a failure sets the kill switch (funnel or global, as configured) with the evidence,
  unless it is already set; the switch stays latched until a person clears it;
- the report of the tick is written to the control store for `strangler guard status`.
Missing telemetry never trips and never passes: the report says so and an alert is raised.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from proxy import control, rollout
from proxy.decision import GLOBAL_SCOPE
from proxy.guardrails.judge import FunnelJudgement, judge_funnel
from proxy.guardrails.model import Verdict
from proxy.rules import Funnel, RuleSet
from proxy.store import StoreUnavailable

if TYPE_CHECKING:
    from proxy.runtime import ProxyRuntime

log = logging.getLogger("strangler.guardrails")

REPORT_KEY = "guard:report"
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


class GuardrailMonitor:
    def __init__(self, runtime: ProxyRuntime) -> None:
        self.rt = runtime
        self.id = uuid.uuid4().hex[:12]
        self.last_report: dict[str, Any] = {}
        self._telemetry_ok = True

    # -- one tick ------------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        rules = self.rt.snapshot.rules
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
        self.rt.metrics.guard_telemetry_up.set(1 if telemetry_ok else 0)
        if not telemetry_ok and self._telemetry_ok:
            self._notify_webhook({"event": "guardrail.telemetry_unavailable", "at": now,
                                  "error": report.get("error")})
        self._telemetry_ok = telemetry_ok
        try:
            report["rollouts"] = self._rollouts(report, now)
        except StoreUnavailable as exc:
            log.warning("rollouts not advanced: %s", exc)
        self.last_report = report
        try:
            self.rt.store.set_meta(REPORT_KEY, json.dumps(report, default=str))
        except StoreUnavailable as exc:
            log.warning("guardrail report not stored: %s", exc)
        return report

    def _traffic(self, rules: RuleSet, now: float) -> dict[str, dict[str, dict[str, float]]]:
        """Requests per second per funnel, country and backend over the last minute."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for funnel in rules.funnels:
            per_country = self.rt.telemetry.countries(funnel.name, now - TRAFFIC_WINDOW, now)
            out[funnel.name] = {
                country: {arm: round(stats.requests / TRAFFIC_WINDOW, 3)
                          for arm, stats in arms.items()}
                for country, arms in per_country.items()
            }
        return out

    def epoch_start(self, funnel: Funnel, now: float) -> float:
        store = self.rt.store
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
        return max([float(epoch["start"]), *(float(c) for c in cleared if c)])

    def _check(self, rules: RuleSet, funnel: Funnel, now: float) -> dict[str, Any]:
        spec = funnel.guardrails
        assert spec is not None
        telemetry = self.rt.telemetry
        since = self.epoch_start(funnel, now)
        cumulative = telemetry.window(funnel.name, since, now)
        # Burn windows trail from now but never reach back past the epoch: errors from
        # before a person cleared the switch must not trip it again.
        burn = {
            seconds: telemetry.window(funnel.name, max(now - seconds, since), now)
            for seconds in spec.burn_window_seconds()
        }
        share = expected_core_share(funnel, telemetry.rule_units(funnel.name, since, now))
        judgement = judge_funnel(spec, cumulative, burn, share)
        self._export(funnel.name, judgement)
        entry: dict[str, Any] = {
            "verdict": judgement.verdict.value, "trips": judgement.trips,
            "sample_ratio_mismatch": judgement.sample_ratio_mismatch, "since": since,
            "configured_core_share": share,
            "guardrails": [asdict(r) for r in judgement.results],
            "killed": self._killed(funnel),
        }
        if judgement.trips and not entry["killed"]:
            entry["tripped"] = self._trip(rules, funnel, judgement, entry, now)
        return entry

    def _killed(self, funnel: Funnel) -> bool:
        kills = self.rt.snapshot.kills
        return GLOBAL_SCOPE in kills or funnel.name in kills

    def _export(self, funnel: str, judgement: FunnelJudgement) -> None:
        m = self.rt.metrics
        for r in judgement.results:
            m.guard_verdict.labels(funnel, r.name).set(VERDICT_VALUE[r.verdict])
            for arm, value in (("core", r.core_estimate), ("legacy", r.legacy_estimate)):
                if value is not None:
                    m.guard_estimate.labels(funnel, r.name, arm).set(value)

    # -- staged rollouts ------------------------------------------------------------------------

    def _rollouts(self, report: dict[str, Any], now: float) -> list[dict[str, Any]]:
        """Advance every active rollout by one tick (see proxy.rollout)."""
        store = self.rt.store
        seen = []
        for current in rollout.all_rollouts(store):
            if current.state not in rollout.ACTIVE:
                continue
            updated = current
            cmd = rollout.take_command(store, current.id)
            if cmd is not None:
                updated = rollout.command(updated, cmd, now)
            funnel = report["funnels"].get(updated.funnel)
            ok = report["telemetry"] == "ok" and funnel is not None
            # A sample-ratio mismatch fails the verdict without tripping: it freezes.
            verdict = None if not ok else (
                "fail" if funnel["trips"] else
                "pass" if funnel["verdict"] == "pass" else "insufficient_data")
            kills = self.rt.snapshot.kills
            killed = updated.funnel in kills or GLOBAL_SCOPE in kills
            decision = rollout.step(updated, verdict, killed, now)
            updated = decision.rollout
            if decision.apply_percent is not None:
                control.ramp(store, updated.funnel, updated.country, decision.apply_percent,
                             actor=f"rollout:{updated.id}", reason=f"rollout {updated.id}: "
                             f"{updated.detail}")
            if updated != current:
                rollout.save(store, updated)
                log.warning("rollout %s (%s): %s", updated.id, updated.funnel, updated.detail)
            seen.append({"id": updated.id, "funnel": updated.funnel, "state": updated.state,
                         "percent": str(updated.percent), "detail": updated.detail})
        return seen

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
        control.kill(self.rt.store, scope, actor=MONITOR_ACTOR, reason=reason, evidence=evidence)
        for name in failed:
            self.rt.metrics.guard_trips.labels(funnel.name, name).inc()
        log.critical("%s (scope %s)", reason, scope or GLOBAL_SCOPE)
        self._notify_webhook({"event": "guardrail.tripped", "scope": scope or GLOBAL_SCOPE,
                              "reason": reason, "evidence": evidence})
        return {"scope": scope or GLOBAL_SCOPE, "reason": reason}

    def _notify_webhook(self, payload: dict[str, Any]) -> None:
        url = self.rt.settings.guard_webhook_url
        if not url:
            return
        import httpx  # here, not at the top: httpx loads rich and pygments (~8 MB)

        try:
            httpx.post(url, json=payload, timeout=3.0).raise_for_status()
        except httpx.HTTPError as exc:
            log.error("guardrail webhook %s failed: %s", url, exc)


class LocalLease:
    """Embedded mode: one process, always the monitor."""

    def hold(self) -> bool:
        return True

    def close(self) -> None:
        pass


class RedisLease:
    """One monitor among the replicas: a lease in Redis, renewed every tick."""

    KEY = "strangler:monitor:lease"

    def __init__(self, url: str, owner: str, ttl_seconds: float) -> None:
        import redis

        self._redis = redis
        self.client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1,
                                           decode_responses=True)
        self.owner = owner
        self.ttl_ms = int(ttl_seconds * 1000)

    def hold(self) -> bool:
        try:
            if self.client.set(self.KEY, self.owner, nx=True, px=self.ttl_ms):
                return True
            if self.client.get(self.KEY) == self.owner:
                self.client.pexpire(self.KEY, self.ttl_ms)
                return True
        except self._redis.RedisError as exc:
            log.warning("monitor lease unavailable: %s", exc)
        return False

    def close(self) -> None:
        self.client.close()
