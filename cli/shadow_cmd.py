"""`strangler shadow`: where the core builds carts differently from legacy, before any
customer is routed to it (docs/shadow.md).

The proxy holding the monitor lease stores the shadow report's summary in the control store
every guard tick (`shadow.report.store_summary`, meta key `shadow:report`), in embedded and
Redis mode alike; these commands read it there, so they work with every proxy down (showing
the last figures written, and how old they are).
"""

from __future__ import annotations

import json
import time
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import (
    DEFAULT_DB,
    EXIT_USAGE,
    AsJson,
    DbPath,
    RedisUrl,
    console,
    fail,
    print_json,
    print_rows,
    store_for,
)

# The rules parser is imported inside the commands (`--help` does not pay for it).
if TYPE_CHECKING:
    from control.rules import Funnel, RuleSet

app = typer.Typer(help="Shadow parity: legacy-served cart building replayed to the core and "
                  "compared field by field.", no_args_is_help=True)

STALE_SECONDS = 300.0  # a summary older than this is called out: is a proxy running?
NO_REPORT = ("no shadow report yet: no proxy has written one (the proxy holding the monitor "
             "lease writes it every guard tick once it runs)")
NO_CONFIG = ("no funnel of the active rules has a shadow configured: add a shadow: section to "
             "a funnel or a rule (docs/shadow.md)")
EXAMPLES_SHOWN = 3
FIELDS_IN_STATUS = 3


# -- formatting ----------------------------------------------------------------------------------


def pct(share: Any, rounding: str = ROUND_HALF_EVEN) -> str:
    """A share 0..1 as a percentage with two decimals ("99.40%"); "-" for none."""
    if share is None:
        return "-"
    value = (Decimal(repr(float(share))) * 100).quantize(Decimal("0.01"), rounding=rounding)
    return f"{value:f}%"


def parity_pct(share: Any) -> str:
    """Parity rounded down: 0.99899 is "99.89%", never "99.90%" against a 99.9% bar."""
    return pct(share, ROUND_FLOOR)


def interval(bounds: Any) -> str:
    """A confidence interval, rounded outwards: "[98.71%, 99.76%]"."""
    if not bounds:
        return "-"
    return f"[{pct(bounds[0], ROUND_FLOOR)}, {pct(bounds[1], ROUND_CEILING)}]"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _age(at: float, now: float) -> str:
    age = max(0.0, now - at)
    if age < 90:
        return f"{age:.0f} s"
    if age < 5400:
        return f"{age / 60:.0f} min"
    return f"{age / 3600:.1f} h"


def _value(value: Any) -> str:
    """An example's value as people read it: JSON, `(absent)` for null or absent."""
    if value is None:
        return "(absent)"
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _say(text: str) -> None:
    """A line of server text: never markup (`items[sku].tax`), never wrapped when piped."""
    console.print(text, markup=False, soft_wrap=True)


def _confidence(summary: dict[str, Any]) -> str:
    alpha = summary.get("alpha")
    return f"{(1 - float(alpha)) * 100:g}%" if isinstance(alpha, int | float) else "95%"


# -- reading -------------------------------------------------------------------------------------


def _load(db_path: str, redis_url: str | None) -> tuple[dict[str, Any], RuleSet | None]:
    """The stored shadow summary ({} when none) and the active rules (None: none)."""
    from control.rules_loader import load_rules_text
    from control.status import shadow_summary

    with store_for(db_path, redis_url) as store:
        summary = shadow_summary(store)
        active = store.active_rules()
    rules = load_rules_text(active.text, str(active.version)) if active else None
    return summary, rules


def _shadowed(rules: RuleSet | None) -> list[Funnel]:
    """The funnels of the active rules with a shadow section (theirs or a rule's)."""
    return [f for f in rules.funnels if f.shadow_lines()] if rules is not None else []


def share_text(funnel: Funnel | None) -> str:
    """The share of legacy-served units shadowed, as the rules configure it."""
    if funnel is None:
        return "not in the active rules"
    rules = [r for r in funnel.rules if r.shadow is not None and r.shadow != funnel.shadow]
    own = f"{funnel.shadow.percent:g}%" if funnel.shadow is not None else ""
    per_rule = ", ".join(f"rule {r.id} {r.shadow.percent:g}%" for r in rules
                         if r.shadow is not None)
    if own and per_rule:
        return f"{own} ({per_rule})"
    return own or per_rule or "off"


def _header(summary: dict[str, Any]) -> None:
    now = time.time()
    at = summary.get("at")
    window = summary.get("window_seconds")
    line = "shadow parity"
    if isinstance(window, int | float):
        line += f" over the last {_duration(float(window))}"
    if isinstance(at, int | float):
        line += f", written {_age(float(at), now)} ago by the proxy holding the monitor lease"
    _say(line + f"; intervals at {_confidence(summary)} confidence (always valid)")
    if isinstance(at, int | float) and now - at > STALE_SECONDS:
        _say(f"warning: these figures are {_age(float(at), now)} old: is a proxy running? "
             "(it rewrites them every guard tick)")


# -- status --------------------------------------------------------------------------------------


def _drops(dropped: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(dropped.items()) if n) or "0"


def _differing(fields: dict[str, Any]) -> str:
    """The fields of a route that differed, most mismatches first, at most a few."""
    bad = [(path, f) for path, f in fields.items() if f.get("mismatches")]
    shown = [f"{path} {pct(f['mismatch_rate'])} ({f['mismatches']} of {f['comparisons']})"
             + (" noise?" if f.get("noise") else "") for path, f in bad[:FIELDS_IN_STATUS]]
    if len(bad) > FIELDS_IN_STATUS:
        shown.append(f"+{len(bad) - FIELDS_IN_STATUS} more")
    return "; ".join(shown) or "-"


def _noise(name: str, routes: dict[str, Any]) -> list[str]:
    return [f"noise: {name} {route} {path}: {f['hint']}"
            for route, body in routes.items()
            for path, f in (body.get("fields") or {}).items() if f.get("noise")]


@app.command("status")
def status(
    db_path: DbPath = DEFAULT_DB, redis_url: RedisUrl = None, as_json: AsJson = False,
) -> None:
    """Parity per funnel and per route: units compared and the share of them whose every
    response matched legacy's (parity), responses compared and with a mismatch, the mismatch
    rate with its confidence interval, the fields that differ, drops by reason, and fields
    flagged as noise. --json prints the stored summary as it is.

    Example: strangler shadow status --json
    """
    summary, rules = _load(db_path, redis_url)
    if as_json:
        print_json(summary or {"at": None, "funnels": {}})
        return
    shadowed = _shadowed(rules)
    if not summary:
        _say(NO_REPORT)
        if not shadowed:
            _say(NO_CONFIG)
        return
    reported: dict[str, Any] = summary.get("funnels") or {}
    names = [f.name for f in shadowed] + [n for n in reported if n not in
                                           {f.name for f in shadowed}]
    if not names:
        _say(NO_CONFIG)
        return
    _header(summary)
    conf = _confidence(summary)
    funnel_rows = []
    route_rows = []
    noise: list[str] = []
    for name in names:
        body = reported.get(name) or {}
        units = body.get("units") or {}
        funnel_rows.append((
            name, share_text(rules.funnel(name) if rules is not None else None),
            str(units.get("compared") or 0), str(units.get("with_mismatch") or 0),
            parity_pct(units.get("parity")), interval(units.get("parity_interval")),
            str(body.get("comparisons") or 0), str(body.get("mismatches") or 0),
            _drops(body.get("dropped") or {}),
        ))
        routes: dict[str, Any] = body.get("routes") or {}
        for route, r in routes.items():
            route_rows.append((name, route, str(r.get("comparisons") or 0),
                               str(r.get("mismatches") or 0), pct(r.get("mismatch_rate")),
                               interval(r.get("interval")), _differing(r.get("fields") or {})))
        noise += _noise(name, routes)
    print_rows(("funnel", "shadow share", "units compared", "units with a mismatch", "parity",
                f"parity {conf} interval", "responses compared", "responses with a mismatch",
                "dropped"), funnel_rows)
    if route_rows:
        _say("\nper route:")
        print_rows(("funnel", "route", "responses compared", "with a mismatch",
                    "mismatch rate", f"{conf} interval", "fields that differ"), route_rows)
    for line in noise:
        _say(line)
    for name in names:
        if not ((reported.get(name) or {}).get("units") or {}).get("compared"):
            _say(f"{name}: no request of it mirrored and compared in the window yet")
    _say("`strangler shadow diff --funnel F` shows the fields that differ, with examples")


# -- diff ----------------------------------------------------------------------------------------


def _route_key(route: str) -> str:
    from shadow.routes import parse_route_key

    try:
        return parse_route_key(route).key
    except ValueError as exc:
        fail(f"--route: {exc}", EXIT_USAGE)


def _only(summary: dict[str, Any], funnel: str, route: str | None) -> dict[str, Any]:
    """The summary with only `funnel` (and `route`): the shape `summarize` gives."""
    body = (summary.get("funnels") or {}).get(funnel)
    out = {k: v for k, v in summary.items() if k != "funnels"}
    if body is None:
        return {**out, "funnels": {}}
    if route is not None:
        body = {**body, "routes": {k: v for k, v in (body.get("routes") or {}).items()
                                   if k == route}}
    return {**out, "funnels": {funnel: body}}


def _examples(f: dict[str, Any]) -> list[str]:
    lines = []
    for e in (f.get("examples") or [])[:EXAMPLES_SHOWN]:
        at = e.get("at")
        when = time.strftime("%H:%M:%S", time.localtime(at)) if isinstance(
            at, int | float) else "-"
        ids = (f"  (legacy {e['legacy_id']}, core {e['core_id']})"
               if e.get("legacy_id") and e.get("core_id") else "")
        lines.append(f"    {when}  {e.get('where') or e.get('field')}: legacy "
                     f"{_value(e.get('legacy'))}, core {_value(e.get('core'))}{ids}")
    return lines


def _print_route(funnel: str, route: str, r: dict[str, Any], conf: str) -> None:
    fields: dict[str, Any] = r.get("fields") or {}
    bad = {path: f for path, f in fields.items() if f.get("mismatches")}
    head = (f"{funnel} {route}: {r.get('comparisons') or 0} responses compared, "
            f"{r.get('mismatches') or 0} with a mismatch")
    if not r.get("mismatches"):
        _say(f"\n{head}; {len(fields)} fields compared, none differs")
        return
    _say(f"\n{head} ({pct(r.get('mismatch_rate'))}, {conf} interval "
         f"{interval(r.get('interval'))})")
    print_rows(("field", "kind", "comparisons", "mismatches", "mismatch rate",
                f"{conf} interval", "noise"),
               [(path, "money" if f.get("money") else "-", str(f.get("comparisons") or 0),
                 str(f.get("mismatches") or 0), pct(f.get("mismatch_rate")),
                 interval(f.get("interval")), "noise" if f.get("noise") else "-")
                for path, f in bad.items()])
    for path, f in bad.items():
        if f.get("noise"):
            _say(f"  noise: {path}: {f.get('hint')}")
        lines = _examples(f)
        if lines:
            _say(f"  {path}, newest first (customer data redacted):")
            for line in lines:
                _say(line)
    same = len(fields) - len(bad)
    if same:
        _say(f"  {same} other fields compared without a mismatch")


@app.command("diff")
def diff(
    funnel: Annotated[str, typer.Option("--funnel", help="A funnel of the active rules.")],
    route: Annotated[str | None, typer.Option(
        "--route", help="One route, as 'METHOD /path' (e.g. 'POST /carts/{cart_id}/items'; "
        "parameter names do not matter).")] = None,
    db_path: DbPath = DEFAULT_DB, redis_url: RedisUrl = None, as_json: AsJson = False,
) -> None:
    """The fields of a funnel's responses that differ between the core and legacy, per
    route: comparisons, mismatches, the mismatch rate with its confidence interval, a few
    recent examples with both values (customer data redacted), and noise hints.

    Exits 2 for a funnel the active rules do not name, or a route that is not a
    cart-building route. --json prints the stored summary of that funnel (and route).

    Example: strangler shadow diff --funnel hardware --route 'POST /carts/{cart_id}/items'
    """
    key = _route_key(route) if route is not None else None
    summary, rules = _load(db_path, redis_url)
    reported: dict[str, Any] = summary.get("funnels") or {}
    names = [f.name for f in rules.funnels] if rules is not None else []
    if funnel not in names and funnel not in reported:
        known = names + [n for n in reported if n not in names]
        with_shadow = [f.name for f in _shadowed(rules)]
        fail(f"no funnel named {funnel!r}; "
             + (f"funnels: {', '.join(known)}" if known else "no rules are active")
             + (f" (with a shadow: {', '.join(with_shadow)})" if with_shadow else
                " (none has a shadow configured)"), EXIT_USAGE)
    if as_json:
        print_json(_only(summary, funnel, key) if summary else {"at": None, "funnels": {}})
        return
    config = rules.funnel(funnel) if rules is not None else None
    if not summary:
        _say(NO_REPORT)
    body = reported.get(funnel)
    if body is None:
        if config is None or not config.shadow_lines():
            _say(f"{funnel} has no shadow configured in the active rules: add a shadow: "
                 "section to it or to one of its rules (docs/shadow.md)")
        elif summary:
            _say(f"{funnel}: no request of it has been mirrored and compared in the window "
                 f"yet ({share_text(config)} of legacy-served units shadowed)")
        return
    _header(summary)
    for line in config.shadow_lines() if config is not None else []:
        _say(line)
    routes: dict[str, Any] = body.get("routes") or {}
    units = body.get("units") or {}
    conf = _confidence(summary)
    _say(f"{funnel}: parity {parity_pct(units.get('parity'))} ({conf} interval "
         f"{interval(units.get('parity_interval'))}) over {units.get('compared') or 0} "
         f"compared units, {units.get('with_mismatch') or 0} with a mismatch; dropped: "
         f"{_drops(body.get('dropped') or {})}")
    if key is not None and key not in routes:
        _say(f"no comparison of {key} on {funnel} in the window; routes compared: "
             f"{', '.join(routes) or 'none'}")
        return
    for name, r in routes.items():
        if key is None or name == key:
            _print_route(funnel, name, r, conf)
