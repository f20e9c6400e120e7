"""`strangler guard`: what the guardrail monitor sees, funnel by funnel."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import typer

from cli.common import (
    DEFAULT_DB,
    AsJson,
    DbPath,
    RedisUrl,
    console,
    print_json,
    print_rows,
    store_for,
)
from guardrails.report import read_report

EXIT_GUARDRAIL = 3

app = typer.Typer(help="Guardrails: the core judged against legacy.", no_args_is_help=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{float(value) * 100:.1f}%"


def _pct2(value: Any) -> str:
    return "-" if value is None else f"{float(value) * 100:.2f}%"


def _p_value(value: Any) -> str:
    return "-" if value is None else f"p={float(value):.3g}"


def _ms(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f} ms"


def _times(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3g}x"


def _latency_ceiling(g: dict[str, Any]) -> bool:
    """Whether a latency bound is the p95 against the ceiling (ms), not a ratio (x)."""
    ev = g.get("evidence") or {}
    return ev.get("ceiling_ms") is not None and g["threshold"] == ev.get("ceiling_ms") and (
        g["threshold"] != ev.get("max_ratio"))


def with_units(g: dict[str, Any]) -> tuple[str, str, str, str]:
    """Core and legacy estimates, bound and threshold of a guardrail, each with its unit."""
    name = g["name"]
    est: Callable[[Any], str]
    bound: Callable[[Any], str]
    if name in ("conversion", "payment_success"):
        est, bound = _pct, _pct  # rates; the bound is the relative drop of core vs legacy
    elif name == "latency_p95":
        est, bound = _ms, (_ms if _latency_ceiling(g) else _times)
    elif name == "error_budget":  # the error rate; the burn rate against the SLO, or how
        # long the core has been unreachable against the grace period (seconds)
        est, bound = _pct2, (_seconds if _unreachable(g) else _times)
    elif name == "sample_ratio":
        est, bound = _pct, _p_value
    else:
        est = bound = _fmt
    return (est(g["core_estimate"]), est(g["legacy_estimate"]), bound(g["bound"]),
            bound(g["threshold"]))


def _unreachable(g: dict[str, Any]) -> bool:
    """Whether an error budget failed because the core stayed unreachable (seconds)."""
    return bool(((g.get("evidence") or {}).get("unreachable") or {}).get("fail"))


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{value:.0f} s"


def _waiting(g: dict[str, Any]) -> str:
    wait = g.get("waiting")
    return f"{wait['lacks']}: {wait['text']}" if wait else "-"


BOUND_HELP = (
    "bound: the confidence bound the verdict compares with the threshold: the relative drop "
    "of core against legacy (conversion, payment success), the core's p95 in ms or its ratio "
    "to legacy's (latency), the burn rate of the error budget or, when the core stayed "
    "unreachable, for how long against its grace (error budget), the p-value "
    "(sample ratio). Not enough samples on either arm: insufficient_data, never a failure."
)


def load_report(db_path: str, redis_url: str | None) -> dict[str, Any] | None:
    with store_for(db_path, redis_url) as store:
        return read_report(store) or None


@app.command("status")
def status(
    db_path: DbPath = DEFAULT_DB, redis_url: RedisUrl = None, as_json: AsJson = False,
) -> None:
    """Each funnel's guardrails: estimate for core and legacy, bound, verdict, samples.

    Shows the monitor's latest judgement (it runs in the proxy every few seconds).
    Exits 3 when a guardrail is failing.

    Example: strangler guard status --json
    """
    report = load_report(db_path, redis_url)
    failing = report is not None and any(
        f["verdict"] == "fail" for f in report.get("funnels", {}).values()
    )
    if as_json:
        print_json(report or {"funnels": {}, "at": None})
    elif report is None:
        console.print("no guardrail report yet: is a proxy running with guardrails configured?")
    else:
        _print(report)
    if failing:
        raise typer.Exit(EXIT_GUARDRAIL)


def _print(report: dict[str, Any]) -> None:
    age = time.time() - float(report["at"])
    console.print(f"judged {age:.0f}s ago, rules version {report.get('rules_version')}, "
                  f"telemetry {report.get('telemetry')}")
    for name, funnel in report.get("funnels", {}).items():
        killed = " [bold red](kill switch set)[/]" if funnel.get("killed") else ""
        console.print(f"\n[bold]{name}[/]: {funnel['verdict']}{killed}")
        print_rows(
            ("guardrail", "core", "legacy", "bound", "threshold", "n core", "n legacy",
             "verdict", "waiting for"),
            [(g["name"], *with_units(g), _fmt(g["n_core"]), _fmt(g["n_legacy"]), g["verdict"],
              _waiting(g)) for g in funnel["guardrails"]],
        )
    if console.is_terminal:
        console.print(f"\n{BOUND_HELP}")
