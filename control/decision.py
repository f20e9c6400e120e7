"""Routing a request: the steps of docs/design.md as one pure function.

1. (context is extracted by `proxy.context`)
2. A kill switch, global or for the funnel, sends the request to legacy.
3. A request that names an entity goes to the owner of that id.
4. A unit with a checkout in flight keeps the backend it started on.
5. The funnel's first matching rule gives a percentage: core when bucket < basis points.
6. Otherwise legacy.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple

from control.bucketing import bucket as bucket_of

if TYPE_CHECKING:
    from control.rules import Funnel, RuleSet

CORE_ID_PREFIX = "co_"
GLOBAL_SCOPE = "*"


class Backend(StrEnum):
    CORE = "core"
    LEGACY = "legacy"


class Reason(StrEnum):
    KILL_SWITCH = "KILL_SWITCH"
    OWNER = "OWNER"
    STICKY = "STICKY"
    RULE = "RULE"
    DEFAULT = "DEFAULT"
    FAILOVER = "FAILOVER"
    ERROR = "ERROR"


class RequestContext(NamedTuple):
    """Immutable, and a tuple: built once per request, so cheap to build matters."""

    funnel: Funnel | None
    country: str | None
    unit: str
    unit_minted: bool
    entity_id: str | None
    path: str  # normalised path as forwarded upstream (funnel prefix stripped)


class Decision(NamedTuple):
    backend: Backend
    reason: Reason
    rules_version: str
    rule_id: str | None = None
    bucket: int | None = None

    def header_value(self) -> str:
        parts = [self.reason.value]
        if self.rule_id is not None:
            parts.append(f"rule={self.rule_id}")
        if self.bucket is not None:
            parts.append(f"bucket={self.bucket}")
        parts.append(f"rules={self.rules_version}")
        return "; ".join(parts)

    def failed_over(self) -> Decision:
        return Decision(Backend.LEGACY, Reason.FAILOVER, self.rules_version, self.rule_id,
                        self.bucket)


def owner_of(entity_id: str) -> Backend:
    """The system that minted an id: the core's ids start with ``co_``."""
    return Backend.CORE if entity_id.startswith(CORE_ID_PREFIX) else Backend.LEGACY


def is_killed(kills: AbstractSet[str], funnel: str | None) -> bool:
    """Whether the kill switches in `kills` send `funnel` (None: no funnel) to legacy: the
    global switch covers every request, a funnel's switch its own."""
    return GLOBAL_SCOPE in kills or (funnel is not None and funnel in kills)


def decide(
    ctx: RequestContext,
    rules: RuleSet | None,
    kills: frozenset[str],
    sticky: Backend | None = None,
) -> Decision:
    """Pick the backend for one request. Never raises for well-formed inputs."""
    version = rules.version if rules is not None else "none"
    funnel = ctx.funnel
    if is_killed(kills, funnel.name if funnel is not None else None):
        return Decision(Backend.LEGACY, Reason.KILL_SWITCH, version)
    if ctx.entity_id is not None:
        return Decision(owner_of(ctx.entity_id), Reason.OWNER, version)
    if sticky is not None:
        return Decision(sticky, Reason.STICKY, version)
    if rules is not None and funnel is not None:
        rule = funnel.rule_for(ctx.country)
        if rule is not None:
            n = bucket_of(funnel.salt, ctx.unit)
            backend = Backend.CORE if n < rule.basis_points else Backend.LEGACY
            return Decision(backend, Reason.RULE, version, rule.id, n)
    return Decision(Backend.LEGACY, Reason.DEFAULT, version)
