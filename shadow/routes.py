"""The routes of the checkout contract (docs/contract.md) as the shadow sees them.

Cart building has no side effect outside the core and may be mirrored: create a cart, add,
change and remove items, create a checkout, and read a cart. Placing an order takes a
payment and is never mirrored, whatever the configuration says; reading an order is never
mirrored either (no order is ever placed in the shadow, so the core has none to read). The
contract has no `GET /checkouts/{id}`. Pure.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field


@functools.cache
def _key(method: str, template: str) -> str:
    return f"{method} {template}"


# Path parameters that name an entity id (mapped legacy -> core); `sku` is not an id.
ID_PARAMS = frozenset({"cart_id", "checkout_id", "order_id"})
_PARAM = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True, slots=True)
class RouteTemplate:
    method: str
    template: str  # "/carts/{cart_id}/items/{sku}"
    name: str  # "change_item"
    mirrorable: bool
    why_never: str = ""  # for a route that is never mirrored: why, in a sentence
    # how rules files and reports name the route: "POST /carts/{cart_id}/items"
    key: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", _key(self.method, self.template))

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(_PARAM.findall(self.template))

    def params_of(self, path: str) -> dict[str, str]:
        """The path parameters of `path`, a path of this route (`route_of`)."""
        parts = path.split("/")
        return {name: parts[i] for i, (name, _) in enumerate(_segments(self.template))
                if name is not None}


@functools.cache
def _segments(template: str) -> tuple[tuple[str | None, str], ...]:
    """A template's segments, parsed once: (parameter name, or None for a literal; text)."""
    out: list[tuple[str | None, str]] = []
    for w in template.split("/"):
        m = _PARAM.fullmatch(w)
        out.append((m.group(1), w) if m else (None, w))
    return tuple(out)


def fill(template: str, params: dict[str, str]) -> str:
    return _PARAM.sub(lambda m: params[m.group(1)], template)


_ORDER = ("it places an order (a payment), and placing an order is never mirrored, "
          "whatever the configuration says")
_READ_ORDER = ("it reads an order, and no order is ever placed in the shadow (the core has "
               "none to read)")

ROUTES: tuple[RouteTemplate, ...] = (
    RouteTemplate("POST", "/carts", "create_cart", True),
    RouteTemplate("GET", "/carts/{cart_id}", "get_cart", True),
    RouteTemplate("POST", "/carts/{cart_id}/items", "add_item", True),
    RouteTemplate("PATCH", "/carts/{cart_id}/items/{sku}", "change_item", True),
    RouteTemplate("DELETE", "/carts/{cart_id}/items/{sku}", "remove_item", True),
    RouteTemplate("POST", "/carts/{cart_id}/checkout", "create_checkout", True),
    RouteTemplate("POST", "/checkouts/{checkout_id}/orders", "place_order", False, _ORDER),
    RouteTemplate("GET", "/orders/{order_id}", "get_order", False, _READ_ORDER),
)
BY_KEY = {r.key: r for r in ROUTES}
MIRRORABLE: tuple[RouteTemplate, ...] = tuple(r for r in ROUTES if r.mirrorable)
# The default of `shadow.routes`: every cart-building route.
CART_BUILDING = frozenset(r.key for r in MIRRORABLE)


# (method, number of segments, first segment) -> each route there with the positions of
# its other literal segments and of its parameters: a request is matched with one split and
# one dict lookup, on the proxy's hot path (every request of a shadowed funnel)
_Candidate = tuple[RouteTemplate, tuple[tuple[int, str], ...], tuple[tuple[int, str], ...]]
_INDEX: dict[tuple[str, int, str], tuple[_Candidate, ...]] = {}
for _route in ROUTES:
    _parts = _segments(_route.template)
    _literals = tuple((i, w) for i, (p, w) in enumerate(_parts) if p is None and i > 1)
    _params = tuple((i, p) for i, (p, _) in enumerate(_parts) if p is not None)
    _where = (_route.method, len(_parts), _parts[1][1])
    _INDEX[_where] = (*_INDEX.get(_where, ()), (_route, _literals, _params))


def route_of(method: str, path: str) -> RouteTemplate | None:
    """The contract route of a request (mirrorable or not): one split, one dict lookup."""
    parts = path.split("/")
    count = len(parts)
    if count < 2 or parts[0]:
        return None
    for route, literals, params in _INDEX.get((method, count, parts[1]), ()):
        for i, word in literals:
            if parts[i] != word:
                break
        else:
            for i, _ in params:
                if not parts[i]:
                    break
            else:
                return route
    return None


def match_route(method: str, path: str) -> tuple[RouteTemplate, dict[str, str]] | None:
    """The contract route of a request (mirrorable or not) and its path parameters."""
    route = route_of(method, path)
    return None if route is None else (route, route.params_of(path))


def parse_route_key(text: str) -> RouteTemplate:
    """The contract route that a rules file's `"METHOD /path"` names; ValueError, with a
    sentence a release manager can act on, when there is none or it is never mirrored.

    A path may spell parameters with any name or with a concrete id
    (`POST /checkouts/lg_chk_1/orders` is refused as order placement too)."""
    parts = text.split()
    if len(parts) != 2 or not parts[1].startswith("/"):
        raise ValueError(f"{text!r} is not a route: write METHOD /path, e.g. "
                         f"'POST /carts/{{cart_id}}/items'")
    method, path = parts[0].upper(), parts[1].rstrip("/") or "/"
    found = match_route(method, path)
    if found is None:
        raise ValueError(f"{text!r} is not a route of the checkout contract; mirrorable "
                         f"routes: {', '.join(r.key for r in MIRRORABLE)}")
    route = found[0]
    if not route.mirrorable:
        raise ValueError(f"{text!r} is refused: {route.why_never}")
    return route
