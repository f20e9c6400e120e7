"""Which requests legacy served are replayed to the core: pure, for the hot path.

A request is mirrored when all of these hold:
- legacy served it for a reason that says nothing against the core (`mirrorable_decision`:
  not a kill switch, a failover or a routing error);
- its funnel (or the rule matching its country) has a shadow section with a share above 0;
- it is one of the section's routes, which are only ever cart building (`shadow.routes`):
  placing or reading an order never is, whatever the configuration says;
- its path names no core id (`co_...`): such a request belongs to the core already;
- its unit is in the share: `shadow_bucket(salt, unit) < basis points`. The hash is
  murmur3 of ``"salt:unit"`` like the rollout's bucket, with another seed, so the units
  shadowed are independent of the units a rule routes to the core; and raising the share
  keeps every unit already shadowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import mmh3

from control.bucketing import BUCKETS
from control.decision import CORE_ID_PREFIX, Backend, Decision, Reason
from shadow.routes import RouteTemplate, route_of
from shadow.spec import ShadowConfig

if TYPE_CHECKING:
    from control.rules import Funnel

SHADOW_SEED = 0x5EAD0  # the rollout bucketing uses seed 0
# Legacy served these because the rules (or an owner, or stickiness) said so: the core is
# not known to be in trouble. KILL_SWITCH, FAILOVER and ERROR are never mirrored.
MIRRORED_REASONS = frozenset({Reason.OWNER, Reason.STICKY, Reason.RULE, Reason.DEFAULT})


class Selection(NamedTuple):
    """A mirrored request: its contract route, path parameters and the shadow config (a
    tuple: one is made for every request selected, on the proxy's hot path)."""

    route: RouteTemplate
    params: dict[str, str]
    config: ShadowConfig

    @property
    def route_key(self) -> str:
        return self.route.key


def shadow_bucket(salt: str, unit: str) -> int:
    """The unit's shadow bucket 0..9999, independent of its rollout bucket
    (`control.bucketing.normalized_hash` with another seed, inlined: the hot path)."""
    return mmh3.hash(f"{salt}:{unit}", SHADOW_SEED, signed=False) % BUCKETS


def mirrorable_decision(decision: Decision) -> bool:
    """Whether a request routed by `decision` may be mirrored at all (legacy served it for
    a reason that is not a kill switch, a failover or an error)."""
    return decision.backend is Backend.LEGACY and decision.reason in MIRRORED_REASONS


_CORE_SEGMENT = "/" + CORE_ID_PREFIX


def names_core_id(path: str) -> bool:
    """Whether a segment of `path` (which starts with "/") is a core id."""
    return _CORE_SEGMENT in path


def selected_route(config: ShadowConfig | None, salt: str, unit: str, method: str,
                   path: str) -> RouteTemplate | None:
    """Whether one legacy-served request is mirrored: its route, or None. The proxy's hot
    path (every request of a shadowed funnel, mirrored or dropped): one hash, one split,
    no copy. `path` is the path as forwarded upstream (funnel prefix stripped); a query
    is ignored."""
    if config is None or (mmh3.hash(f"{salt}:{unit}", SHADOW_SEED, signed=False) % BUCKETS
                          >= config.basis_points):  # shadow_bucket, inlined
        return None
    if "?" in path:
        path = path.split("?", 1)[0]
    route = route_of(method, path)
    if (route is None or not route.mirrorable or route.key not in config.routes
            or _CORE_SEGMENT in path):  # names_core_id, inlined
        return None
    return route


def selection(route: RouteTemplate, config: ShadowConfig, path: str) -> Selection:
    """The Selection of a request `selected_route` returned `route` for."""
    return Selection(route, route.params_of(path.split("?", 1)[0]), config)


def select(config: ShadowConfig | None, salt: str, unit: str, method: str,
           path: str) -> Selection | None:
    """The selection of one legacy-served request, or None when it is not mirrored."""
    route = selected_route(config, salt, unit, method, path)
    if route is None or config is None:
        return None
    return selection(route, config, path)


def select_request(funnel: Funnel | None, country: str | None, unit: str, method: str,
                   path: str) -> Selection | None:
    """`select` with the shadow of the funnel's rule for `country` (else the funnel's)."""
    if funnel is None:
        return None
    return select(funnel.shadow_for(country), funnel.salt, unit, method, path)


def route_request(funnel: Funnel, country: str | None, unit: str, method: str,
                  path: str) -> tuple[RouteTemplate, ShadowConfig] | None:
    """`selected_route` with the shadow of the funnel's rule for `country` (else the
    funnel's), and that shadow: the proxy's hot path; `selection` makes the job's."""
    config = funnel.shadow_for(country)
    route = selected_route(config, funnel.salt, unit, method, path)
    return None if route is None or config is None else (route, config)
