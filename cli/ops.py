"""On-call and release commands: kill, unkill, ramp, status."""

from __future__ import annotations

import time
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer

from cli.common import (
    DEFAULT_DB,
    Actor,
    AsJson,
    DbPath,
    Reason,
    RedisUrl,
    actor_name,
    console,
    fail,
    print_json,
    print_rows,
    store_for,
)
from cli.confirm import show_and_confirm
from control import killswitch
from control.decision import GLOBAL_SCOPE
from control.store import KillSwitch

# The rules parser is imported inside `ramp` and `status`: kill and unkill load only the
# store (they must work fast, and whatever else fails to import).

Funnel = Annotated[str | None, typer.Option(
    "--funnel", help="One funnel of the active rules (exact name). Leave out for the global "
    "switch.")]
Global = Annotated[bool, typer.Option(
    "--global", help="The global switch (all funnels); the same as leaving --funnel out.")]


def _funnel_or_global(funnel: str | None, everything: bool) -> str | None:
    if everything and funnel is not None:
        fail("give --funnel F or --global, not both", 2)
    return funnel


def kill(
    reason: Reason, funnel: Funnel = None, everything: Global = False,
    db_path: DbPath = DEFAULT_DB, redis_url: RedisUrl = None, actor: Actor = None,
) -> None:
    """Send all traffic (or one funnel's) to legacy now. Works with the proxy down.

    Refused (exit 1, nothing written) when --funnel names no funnel of the active rules.

    Example: strangler kill --funnel warranties --reason "INC-123 payment errors"
    """
    funnel = _funnel_or_global(funnel, everything)
    with store_for(db_path, redis_url, lost_ok=True) as store:
        switch = killswitch.kill(store, funnel, actor=actor_name(actor), reason=reason)
    console.print(f"kill switch [bold red]{switch.scope}[/] set: traffic goes to legacy")


def unkill(
    reason: Annotated[str | None, typer.Option(
        "--reason", help="Why it is safe again: recorded in the audit log (asked for, after "
        "the switch and its evidence are shown, when missing).")] = None,
    funnel: Funnel = None, everything: Global = False, db_path: DbPath = DEFAULT_DB,
    redis_url: RedisUrl = None, actor: Actor = None,
) -> None:
    """Clear a kill switch; rules route traffic again. Shows who set it, why, and the
    evidence of a guardrail trip before asking why it is safe now.

    Refused (exit 1, nothing written or audited) when that switch is not set.

    Example: strangler unkill --funnel warranties --reason "fix deployed"
    """
    funnel = _funnel_or_global(funnel, everything)
    scope = funnel or GLOBAL_SCOPE
    with store_for(db_path, redis_url) as store:
        current = store.kill_switches().get(scope)
        if current is None:
            fail(f"kill switch {scope} is not set; nothing was changed")
        _show_switch(current)
        if reason is None:
            reason = typer.prompt("Why is it safe to send traffic to the core again?")
        previous = killswitch.unkill(store, funnel, actor=actor_name(actor), reason=reason)
    console.print(f"kill switch {scope} cleared (was set by {previous.actor}: "
                  f"{previous.reason}): the rules route traffic again")


def _show_switch(switch: KillSwitch) -> None:
    """Who set the switch, when and why; a trip's guardrails with units."""
    from cli.guard_cmd import with_units

    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(switch.at))
    console.print(f"kill switch {switch.scope}: set by {switch.actor} at {when}: "
                  f"{switch.reason}")
    guardrails = (switch.evidence or {}).get("guardrails", [])
    if guardrails:
        console.print("evidence of the trip (core against legacy):")
        print_rows(("guardrail", "verdict", "core", "legacy", "bound", "threshold", "n core",
                    "n legacy"),
                   [(g["name"], g["verdict"], *with_units(g), str(g["n_core"] or "-"),
                     str(g["n_legacy"] or "-")) for g in guardrails])


def ramp(
    funnel: Annotated[str, typer.Argument(help="Funnel name.")],
    percent: Annotated[str, typer.Option("--percent", help="0-100, down to 0.01.")],
    reason: Reason,
    country: Annotated[str | None, typer.Option("--country", help="ISO country code.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking.")] = False,
    db_path: DbPath = DEFAULT_DB, redis_url: RedisUrl = None, actor: Actor = None,
) -> None:
    """Change one percentage, as a new rules version, after showing its blast radius.

    With --country, the rule that names only that country (created first in the funnel if
    missing); without, the funnel's catch-all '*' rule.

    Example: strangler ramp warranties --country IE --percent 75 --reason "guardrails green"
    """
    from control import operations
    from control.rules_loader import load_rules_text

    try:
        value = Decimal(percent)
    except InvalidOperation:
        fail(f"--percent must be a number, not {percent!r}", 2)
    if not value.is_finite() or not 0 <= value <= 100 or value != value.quantize(
            Decimal("0.01")):
        fail(f"--percent must be between 0 and 100 in steps of 0.01, not {percent}", 2)
    if not reason.strip():
        fail("--reason must say why", 2)
    with store_for(db_path, redis_url) as store:
        active = store.active_rules()
        if active is None:
            fail("no rules are active: apply a rules file first")
        text, sentence = operations.ramp_text(
            active.text, funnel, country.upper() if country else None, value
        )
        show_and_confirm(load_rules_text(active.text, str(active.version)),
                         load_rules_text(text, "next", f"ramp {funnel}"), sentence, yes=yes)
        record = operations.apply_rules_text(
            store, text, source=f"ramp {funnel}", actor=actor_name(actor),
            reason=f"{reason} ({sentence})", expected_version=active.version,
        )
    console.print(f"applied as rules version {record.version}")


def rule_countries(rules: list[dict[str, Any]], live: dict[str, Any]) -> list[set[str]]:
    """The countries of live traffic each rule actually matches: first match wins, so a
    rule gets only the countries no earlier rule named ('*': every other one)."""
    claimed: set[str] = set()
    out = []
    for r in rules:
        named = set(live) if r["countries"] == "*" else set(r["countries"])
        out.append(named - claimed)
        claimed |= named
    return out


def _live(live: dict[str, dict[str, float]], countries: set[str]) -> str:
    """Live split and rates of the traffic of `countries`."""
    wanted = {c: live[c] for c in countries if c in live}
    core = sum(v.get("core", 0.0) for v in wanted.values())
    legacy = sum(v.get("legacy", 0.0) for v in wanted.values())
    if core + legacy == 0:
        return "no traffic"
    return f"{core / (core + legacy):.1%} core  {core:.2f}/{legacy:.2f} req/s"


def status(
    db_path: DbPath = DEFAULT_DB, redis_url: RedisUrl = None, as_json: AsJson = False,
) -> None:
    """Funnels x countries: percentages, live split and rates, kill switches, guardrails.

    The live figures come from the guardrail monitor running in the proxy (last minute).

    Example: strangler status --json
    """
    from control.status import status_data

    with store_for(db_path, redis_url) as store:
        data = status_data(store)
    if as_json:
        print_json(data)
        return
    version = data["rules_version"]
    console.print(f"rules version: {version if version is not None else 'none (all legacy)'}")
    for scope, k in data["kill_switches"].items():
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(k["at"]))
        console.print(f"[bold red]KILL SWITCH {scope}[/] by {k['actor']} at {when}: {k['reason']}")
    header = ("funnel", "rule", "countries", "core %", "live (last minute)", "state",
              "guardrails", "shadow %")
    rows = []
    for f in data["funnels"]:
        guard = f["guardrails"]["verdict"] if f["guardrails"] else "-"
        matched = rule_countries(f["rules"], f["live"])
        for r, countries in zip(f["rules"], matched, strict=True):
            shown = r["countries"] if isinstance(r["countries"], str) else ",".join(
                r["countries"])
            shadow = f["shadow"]["percent_by_rule"].get(r["id"])
            rows.append((f["name"], r["id"], shown, f"{r['percent']:g}",
                         _live(f["live"], countries), "killed" if f["killed"] else "live",
                         guard, "-" if shadow is None else f"{shadow:g}"))
    print_rows(header, rows)
    _print_shadow(data["funnels"])
    for r in data["rollouts"]:
        console.print(f"rollout {r['id']} {r['funnel']}: {r['percent']}% {r['state']}: "
                      f"{r['detail']}")
    _print_rules_files(data["rules_files"])


def _print_shadow(funnels: list[dict[str, Any]]) -> None:
    """Each funnel's shadow parity configuration and, once compared, its parity."""
    shadowed = [f for f in funnels if f["shadow"]["lines"]]
    if not shadowed:
        return
    lines = [("shadow parity (legacy-served cart building replayed to the core; `strangler "
              "shadow status`):")]
    for f in shadowed:
        lines += [f"  {line}" for line in f["shadow"]["lines"]]
        units = f["shadow"]["units"] or {}
        lines.append(f"  {f['name']}: parity {percent_floor(units['parity'])} over "
                     f"{units['compared']} compared units ({units['with_mismatch']} with a "
                     "mismatch)" if units.get("compared") else
                     f"  {f['name']}: no units compared yet")
    for line in lines:  # field paths such as items[sku].name are not markup
        console.print(line, markup=False, soft_wrap=True)


def percent_floor(share: float | None) -> str:
    """A share 0..1 as a percentage rounded down to 0.01 ("99.89%", never "99.9%" for
    0.99899: a parity is never shown meeting a bar it misses)."""
    from control.rollout import floor_percent

    return "-" if share is None else f"{floor_percent(share)}%"


def _print_rules_files(files: list[dict[str, Any]]) -> None:
    """Drift of the active rules from each watched file, and a refused edit."""
    for f in files:
        drift = f["drift"]
        if drift:
            console.print(f"drift: the active rules differ from {f['path']} (imported as "
                          f"version {f['imported_as_version']}) in: {', '.join(drift)}; "
                          "`strangler rules export` writes the active rules for the file")
        if f.get("error"):
            console.print(f"[bold red]RULES FILE REJECTED[/] {f['path']} (the last good rules "
                          f"keep serving):\n{f['error']}")
        conflict = f["conflict"]
        if isinstance(conflict, dict):
            console.print(f"[bold red]RULES FILE EDIT REFUSED[/] {f['path']}: it conflicts "
                          "with changes made since the last import:")
            for c in conflict["conflicts"]:
                console.print(f"  {c['sentence']}")
