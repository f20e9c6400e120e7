"""`strangler guard`: what the guardrail monitor sees, funnel by funnel."""

from __future__ import annotations

import time
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
             "verdict"),
            [(g["name"], _fmt(g["core_estimate"]), _fmt(g["legacy_estimate"]), _fmt(g["bound"]),
              _fmt(g["threshold"]), _fmt(g["n_core"]), _fmt(g["n_legacy"]), g["verdict"])
             for g in funnel["guardrails"]],
        )
