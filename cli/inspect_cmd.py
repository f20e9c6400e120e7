"""`strangler explain` and `strangler audit`: why a request goes where, and who did what."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from cli.common import (
    DEFAULT_DB,
    AsJson,
    DbPath,
    RedisUrl,
    console,
    fail,
    print_json,
    print_rows,
    store_for,
)
from control.decision import Backend, Reason, decide

_WHY = {
    Reason.KILL_SWITCH: "a kill switch is set",
    Reason.OWNER: "the request names an id that this backend minted",
    Reason.STICKY: "the unit has a checkout in flight there",
    Reason.RULE: "the funnel's first matching rule put its bucket there",
    Reason.DEFAULT: "no funnel or rule matched",
}


def _sticky(redis_url: str | None, funnel: str | None, unit: str) -> Backend | None:
    """The unit's in-flight checkout, from the Redis that holds traffic state."""
    if not redis_url or funnel is None:
        return None
    import redis

    from proxy.sticky_redis import KEY

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        raw = client.get(f"{KEY}{funnel}:{unit}")
    finally:
        client.close()
    return Backend(str(raw)) if raw else None


def explain(
    funnel: Annotated[str | None, typer.Option(help="Funnel name (as in the funnel header).")]
    = None,
    country: Annotated[str | None, typer.Option(help="ISO country code.")] = None,
    session: Annotated[str | None, typer.Option(help="Sticky unit (checkout_session).")] = None,
    path: Annotated[str, typer.Option(help="Request path, e.g. /carts/co_cart_1.")] = "/carts",
    db_path: DbPath = DEFAULT_DB, redis_url: RedisUrl = None, as_json: AsJson = False,
    traffic_redis_url: Annotated[str | None, typer.Option(
        "--traffic-redis-url", envvar="STRANGLER_TRAFFIC_REDIS_URL",
        help="The Redis of traffic state, where in-flight checkouts are (default: "
        "--redis-url).")] = None,
) -> None:
    """Say which backend a request would go to, and why.

    Example: strangler explain --funnel warranties --country IE --session s-123
    """
    from control.rules_loader import load_rules_text
    from proxy.context import extract_context  # pure: parsing a request, no server

    headers = [(b"x-checkout-session", (session or "explain-no-session").encode())]
    if funnel:
        headers.append((b"x-checkout-funnel", funnel.encode()))
    if country:
        headers.append((b"x-country", country.upper().encode()))
    with store_for(db_path, redis_url) as store:
        active = store.active_rules()
        kills = frozenset(store.kill_switches())
    rules = load_rules_text(active.text, str(active.version)) if active else None
    ctx = extract_context(rules, path, headers)
    if ctx.funnel is None and funnel and rules is not None:
        fail(f"no funnel matches {funnel!r}; known: {', '.join(f.name for f in rules.funnels)}")
    sticky = _sticky(traffic_redis_url or redis_url, ctx.funnel.name if ctx.funnel else None,
                     ctx.unit)
    decision = decide(ctx, rules, kills, sticky)
    data = {
        "backend": decision.backend.value, "reason": decision.reason.value,
        "rule": decision.rule_id, "bucket": decision.bucket,
        "rules_version": decision.rules_version, "header": decision.header_value(),
        "why": _WHY.get(decision.reason, ""),
        "funnel": ctx.funnel.name if ctx.funnel else None, "country": ctx.country,
        "unit": ctx.unit, "path": ctx.path,
        "sticky_known": bool(redis_url),
    }
    if as_json:
        print_json(data)
        return
    console.print(f"{data['backend']}: {data['why']}\n  X-Checkout-Decision: {data['header']}")
    if decision.reason is Reason.RULE and decision.bucket is not None:
        console.print(f"  bucket {decision.bucket} of 10000, rule {decision.rule_id}")
    if not redis_url:
        console.print("  (embedded mode: in-flight checkouts live in the proxy's memory; a unit "
                      "with a checkout in flight keeps its backend)")


def audit(
    limit: Annotated[int, typer.Option(help="How many entries, newest first.")] = 50,
    db_path: DbPath = DEFAULT_DB, redis_url: RedisUrl = None, as_json: AsJson = False,
) -> None:
    """Rules changes, kill switches, trips and every other recorded action.

    Example: strangler audit --limit 20 --json
    """
    with store_for(db_path, redis_url) as store:
        entries = store.audit_log(limit)
    if as_json:
        print_json([{"at": e.at, "actor": e.actor, "action": e.action, "target": e.target,
                     "reason": e.reason, "details": e.details} for e in entries])
        return
    print_rows(("when", "actor", "action", "target", "reason"), [
        (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at)), e.actor, e.action,
         e.target, e.reason) for e in entries])
