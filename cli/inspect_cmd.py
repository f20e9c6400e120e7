"""`strangler explain` and `strangler audit`: why a request goes where, and who did what."""

from __future__ import annotations

import time
from typing import Annotated, Any

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
from control.decision import Backend, Decision, Reason, RequestContext, decide

_WHY = {
    Reason.KILL_SWITCH: "a kill switch is set",
    Reason.OWNER: "the request names an id that this backend minted",
    Reason.STICKY: "the unit has a checkout in flight there",
    Reason.RULE: "the funnel's first matching rule put its bucket there",
    Reason.DEFAULT: "no funnel or rule matched",
}


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def _shadow_why(decision: Decision, ctx: RequestContext, method: str) -> tuple[bool, str]:
    """Whether the shadow would replay the request to the core after legacy answered it,
    and why (not): the checks of `shadow.selection`, in its order, in words."""
    from shadow.routes import match_route
    from shadow.selection import MIRRORED_REASONS, names_core_id, shadow_bucket

    if decision.backend is Backend.CORE:
        return False, "the core serves it: there is no legacy answer to compare with"
    if decision.reason not in MIRRORED_REASONS:
        return False, (f"legacy serves it as {decision.reason.value}: nothing is replayed "
                       "after a kill switch, a failover or a routing error")
    funnel = ctx.funnel
    if funnel is None:
        return False, "it matches no funnel, and only a funnel's shadow replays requests"
    config = funnel.shadow_for(ctx.country)
    if config is None:
        return False, f"funnel {funnel.name} has no shadow configured"
    if config.basis_points <= 0:
        return False, f"funnel {funnel.name}'s shadow share is 0% for {ctx.country or 'it'}"
    path = ctx.path.split("?", 1)[0]
    found = match_route(method, path)
    if found is None:
        return False, f"{method} {path} is not a route of the checkout contract"
    route = found[0]
    if not route.mirrorable:
        return False, f"{route.key} is never mirrored: {route.why_never}"
    if route.key not in config.routes:
        return False, (f"{route.key} is not one of the shadow's routes "
                       f"({', '.join(sorted(config.routes))})")
    if names_core_id(path):
        return False, "its path names a core id: it belongs to the core already"
    bucket = shadow_bucket(funnel.salt, ctx.unit)
    share = f"{config.basis_points} ({config.percent:g}% of units)"
    if bucket >= config.basis_points:
        return False, f"the unit's shadow bucket {bucket} is not below {share}"
    return True, (f"{route.key}: the unit's shadow bucket {bucket} is below {share}; "
                  "replayed to the core after legacy answered, and compared")


def shadow_of(decision: Decision, ctx: RequestContext, method: str) -> dict[str, Any]:
    """The shadow's word on the explained request (`explain --json`'s `shadow`)."""
    from shadow.selection import mirrorable_decision, select_request

    selected = mirrorable_decision(decision) and select_request(
        ctx.funnel, ctx.country, ctx.unit, method, ctx.path) is not None
    mirrored, why = _shadow_why(decision, ctx, method)
    if mirrored != selected:  # the selection decides; the words are only its reading
        mirrored, why = selected, "mirrored" if selected else "not selected by the shadow"
    config = ctx.funnel.shadow_for(ctx.country) if ctx.funnel is not None else None
    return {"mirrored": mirrored, "why": why,
            "config": config.describe() if config is not None else None}


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
    method: Annotated[str, typer.Option(
        help="Request method: whether the shadow replays it depends on the route.")] = "POST",
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

    method = method.strip().upper()
    if method not in METHODS:
        fail(f"--method must be one of {', '.join(METHODS)}, not {method!r}", 2)
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
    data: dict[str, Any] = {
        "backend": decision.backend.value, "reason": decision.reason.value,
        "rule": decision.rule_id, "bucket": decision.bucket,
        "rules_version": decision.rules_version, "header": decision.header_value(),
        "why": _WHY.get(decision.reason, ""),
        "funnel": ctx.funnel.name if ctx.funnel else None, "country": ctx.country,
        "unit": ctx.unit, "path": ctx.path,
        "sticky_known": bool(redis_url), "method": method,
        # a --session that is not a well-formed unit is replaced, as the proxy does
        "unit_minted": ctx.unit_minted,
    }
    shadow = shadow_of(decision, ctx, method)
    data["shadow"] = shadow
    if as_json:
        print_json(data)
        return
    console.print(f"{data['backend']}: {data['why']}\n  X-Checkout-Decision: {data['header']}")
    if decision.reason is Reason.RULE and decision.bucket is not None:
        console.print(f"  bucket {decision.bucket} of 10000, rule {decision.rule_id}")
    console.print(f"  shadow: {'mirrored' if shadow['mirrored'] else 'not mirrored'}: "
                  f"{shadow['why']}", markup=False, soft_wrap=True)
    if shadow["config"] is not None:
        console.print(f"  shadow of this request: {shadow['config']}", markup=False,
                      soft_wrap=True)
    if ctx.unit_minted:
        console.print(f"  unit {ctx.unit} minted, as the proxy would: "
                      + ("--session must be 8-128 characters of A-Z a-z 0-9 _ . : - "
                         f"({session!r} is not), " if session else "no --session given, ")
                      + "so the bucket shown is a random unit's", markup=False, soft_wrap=True)
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
