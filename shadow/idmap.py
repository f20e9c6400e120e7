"""Legacy ids -> core ids, per unit: the map, and the pure helpers around it.

Each backend mints its own ids (`lg_cart_...`, `co_cart_...`). When the same request was
answered by both, the ids in the same places of the two bodies name the same resource: those
pairs go into the unit's map (`id_pairs`). A later request of the unit that names a legacy
id is replayed with the core's id in its place (`rewrite_request`); when an id is not in
the map (yet), the request cannot be replayed and is dropped and counted, never sent wrong.

Which fields are ids, per the contract (docs/contract.md): the path parameters `cart_id`,
`checkout_id` and `order_id`, and in JSON bodies every `id` and `*_id` field. A pair is
recorded only when the core's side is a core id (`co_...`), so ids both backends take from
elsewhere (a payment's `pay_...`) never enter the map; a legacy id already mapped keeps its
first core id (a later different pairing shows up as a mismatch in the comparison).

The map is bounded: at most `max_units` units (least recently used go first), at most
`max_ids_per_unit` ids per unit, each unit's entry forgotten `ttl` seconds after the first
pair was recorded. `MemoryIdMap` holds it in the process; `shadow.idmap_redis.RedisIdMap`
in Redis, so that replicas share it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from control.decision import CORE_ID_PREFIX
from shadow.routes import ID_PARAMS, RouteTemplate, fill

DEFAULT_TTL = 3600.0
DEFAULT_MAX_UNITS = 100_000
DEFAULT_MAX_IDS_PER_UNIT = 64
_KEY_PREFIX = b"strangler-shadow-idempotency-v1\x00"


class IdMap(Protocol):
    """A unit's legacy id -> core id map, shared or not."""

    async def get(self, unit: str) -> dict[str, str]:
        """The unit's pairs ({} when none, or expired)."""
        ...

    async def add(self, unit: str, pairs: Mapping[str, str]) -> None:
        """Record pairs; an id already mapped keeps its core id."""
        ...

    async def close(self) -> None: ...


class MemoryIdMap:
    """The id map of one process: an LRU of units, each with a deadline."""

    def __init__(self, max_units: int = DEFAULT_MAX_UNITS, ttl: float = DEFAULT_TTL,
                 max_ids_per_unit: int = DEFAULT_MAX_IDS_PER_UNIT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_units = max_units
        self.ttl = ttl
        self.max_ids_per_unit = max_ids_per_unit
        self._clock = clock
        self._units: OrderedDict[str, tuple[float, dict[str, str]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._units)

    def _live(self, unit: str) -> dict[str, str] | None:
        entry = self._units.get(unit)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._units[unit]
            return None
        self._units.move_to_end(unit)
        return entry[1]

    async def get(self, unit: str) -> dict[str, str]:
        return dict(self._live(unit) or {})

    async def add(self, unit: str, pairs: Mapping[str, str]) -> None:
        if not pairs:
            return
        ids = self._live(unit)
        if ids is None:
            ids = {}
            self._units[unit] = (self._clock() + self.ttl, ids)
        for legacy, core in pairs.items():
            if legacy not in ids and len(ids) < self.max_ids_per_unit:
                ids[legacy] = core
        while len(self._units) > self.max_units:
            self._units.popitem(last=False)

    async def close(self) -> None:
        self._units.clear()


# -- pure helpers ------------------------------------------------------------------------------


def _is_id_key(key: str) -> bool:
    return key == "id" or key.endswith("_id")


def _walk_ids(value: Any, found: list[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if _is_id_key(str(k)) and isinstance(v, str):
                found.append(v)
            else:
                _walk_ids(v, found)
    elif isinstance(value, list):
        for v in value:
            _walk_ids(v, found)


def body_ids(body: Any) -> list[str]:
    """The ids a JSON value names (every `id` and `*_id` string), in document order."""
    found: list[str] = []
    _walk_ids(body, found)
    return found


def id_pairs(legacy: Any, core: Any) -> dict[str, str]:
    """legacy id -> core id for the ids in the same places of two answers to one request.

    Objects are matched key by key; arrays of objects with a `sku` by sku, other arrays by
    position. Only pairs whose core side is a core id and whose legacy side is not."""
    pairs: dict[str, str] = {}
    _pair(legacy, core, pairs)
    return pairs


def _pair(legacy: Any, core: Any, pairs: dict[str, str]) -> None:
    if isinstance(legacy, dict) and isinstance(core, dict):
        for k, a in legacy.items():
            b = core.get(k)
            if (_is_id_key(str(k)) and isinstance(a, str) and isinstance(b, str)
                    and b.startswith(CORE_ID_PREFIX) and not a.startswith(CORE_ID_PREFIX)):
                pairs.setdefault(a, b)
            else:
                _pair(a, b, pairs)
    elif isinstance(legacy, list) and isinstance(core, list):
        if all(isinstance(i, dict) and "sku" in i for i in [*legacy, *core]):
            by_sku = {i["sku"]: i for i in core}
            for item in legacy:
                _pair(item, by_sku.get(item["sku"]), pairs)
        else:
            for a, b in zip(legacy, core, strict=False):
                _pair(a, b, pairs)


@dataclass(frozen=True, slots=True)
class Rewritten:
    """The request as the core must get it: its path and body with core ids."""

    path: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Unmapped:
    """The request names ids the map does not know (yet): it cannot be replayed."""

    ids: tuple[str, ...]


def _parse_json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def request_ids(route: RouteTemplate, params: Mapping[str, str], body: bytes) -> list[str]:
    """The ids a request names: in its path (cart, checkout, order) and its JSON body."""
    ids = [v for k, v in params.items() if k in ID_PARAMS]
    return ids + body_ids(_parse_json(body))


def _replace_ids(value: Any, ids: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: (ids[v] if _is_id_key(str(k)) and isinstance(v, str) else
                    _replace_ids(v, ids)) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_ids(v, ids) for v in value]
    return value


def rewrite_request(route: RouteTemplate, params: Mapping[str, str], body: bytes,
                    ids: Mapping[str, str]) -> Rewritten | Unmapped:
    """The request with every legacy id replaced by the core's, or `Unmapped` naming the
    ids the map lacks (a core id in a body counts as unmappable: such a request is never
    mirrored). A body naming no id is passed on byte for byte."""
    parsed = _parse_json(body)
    in_body = body_ids(parsed)
    wanted = [v for k, v in params.items() if k in ID_PARAMS] + in_body
    missing = tuple(dict.fromkeys(i for i in wanted if i not in ids))
    if missing:
        return Unmapped(missing)
    path = fill(route.template, {k: ids[v] if k in ID_PARAMS else v for k, v in params.items()})
    if in_body:
        body = json.dumps(_replace_ids(parsed, ids), separators=(",", ":"),
                          ensure_ascii=False).encode()
    return Rewritten(path, body)


def derive_idempotency_key(key: str) -> str:
    """The Idempotency-Key a mirrored request carries: a deterministic digest of the
    customer's key (a retry maps to the same key), never the customer's key itself."""
    digest = hashlib.sha256(_KEY_PREFIX + key.encode("utf-8", "surrogateescape")).hexdigest()
    return f"shadow-{digest[:48]}"
