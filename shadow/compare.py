"""Compare legacy's response with the core's to the same request, field by field. Pure.

What the contract (docs/contract.md) makes equal or irrelevant:
- the status codes are compared first (field `@status`); when they differ, nothing else is;
- ids (`id`, `*_id`) are compared through the unit's id map: legacy's id mapped to the
  core's must be the core's; an id the map does not know (a payment id, say) is left out;
- timestamps (`*_at`, `timestamp`) and backend names (`backend`) are left out;
- a JSON null and an absent field are the same (the core leaves out `line2: null`);
- arrays of objects with a `sku` are matched by sku (`items[sku].line_total`); an item on
  one side only is a mismatch of `items[sku]`; other arrays are matched by position
  (`errors[].field`); the order of items is not compared;
- money (`unit_price`, `line_total`, `subtotal`, `discount`, `tax`, `total`, `amount`) is
  an integer of minor units and is compared exactly (an integer-valued float is a
  mismatch), unless the shadow config gives that field a tolerance;
- error responses (same non-2xx status on both sides) are compared by problem `type` and
  by the fields their `errors` name; titles and details are prose and differ;
- a body that is not JSON is compared byte for byte (field `@body`).

Field paths are generic (`items[sku].line_total`, the unit of aggregation, of `ignore` and
of `tolerances`); each result also says where exactly (`items[HW-PHONE-6].line_total`).
`ignore` and `tolerances` match a path or anything under it, with or without the brackets
(`items.name` is `items[sku].name`).

Examples shown to people go through `example()`, which redacts customer data (email,
names, addresses, phone numbers) and never includes a whole body.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

STATUS = "@status"
BODY = "@body"
MONEY_FIELDS = frozenset({"unit_price", "line_total", "subtotal", "discount", "tax", "total",
                          "amount"})
TIMESTAMP_FIELDS = frozenset({"timestamp", "created", "updated"})
BACKEND_FIELDS = frozenset({"backend"})
CUSTOMER_FIELDS = frozenset({
    "email", "phone", "phone_number", "mobile", "first_name", "last_name", "full_name",
    "line1", "line2", "line3", "street", "city", "postal_code", "zip", "zip_code", "region",
    "state", "address", "token",
})
CUSTOMER_CONTAINERS = ("address", "customer", "contact", "billing", "shipping")
PRODUCT_CONTAINERS = frozenset({"items"})  # `name` there is a product's, not a person's
REDACTED = "[redacted]"
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_BRACKETS = re.compile(r"\[(sku)?\]")
_MAX_SHOWN = 200  # characters of a value shown in an example


@dataclass(frozen=True, slots=True)
class RawBody:
    """A response body that is not JSON."""

    data: bytes


@dataclass(frozen=True, slots=True)
class FieldResult:
    path: str  # generic: "items[sku].line_total"
    where: str  # concrete: "items[HW-PHONE-6].line_total"
    equal: bool
    legacy: Any
    core: Any
    kind: str  # "status", "money", "id", "value", "item" or "body"


def parse_body(raw: bytes, content_encoding: str | None = None) -> Any:
    """The JSON value of a body (gzip or deflate undone), else `RawBody`."""
    data = raw
    encoding = (content_encoding or "").strip().lower()
    try:
        if encoding == "gzip":
            data = gzip.decompress(raw)
        elif encoding == "deflate":
            data = zlib.decompress(raw)
    except (OSError, EOFError, zlib.error):
        return RawBody(raw)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return RawBody(data)


def normal_path(path: str) -> str:
    """A path without its array brackets: what `ignore` and `tolerances` are matched on."""
    return _BRACKETS.sub("", path)


def _covers(prefixes: Sequence[str], path: str) -> str | None:
    for p in prefixes:
        if path == p or path.startswith(p + "."):
            return p
    return None


def is_money(path: str) -> bool:
    return path.rsplit(".", 1)[-1].split("[", 1)[0] in MONEY_FIELDS


def _is_id(key: str) -> bool:
    return key == "id" or key.endswith("_id")


def _skipped(key: str) -> bool:
    return key.endswith("_at") or key in TIMESTAMP_FIELDS or key in BACKEND_FIELDS


def _segment(key: str) -> str:
    return key if _KEY.match(key) else "@key"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _sku_keyed(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and isinstance(i.get("sku"), str)
                               for i in items)


class _Comparison:
    def __init__(self, ids: Mapping[str, str], ignore: Sequence[str],
                 tolerances: Mapping[str, float]) -> None:
        self.ids = ids
        self.ignore = tuple(normal_path(p) for p in ignore)
        self.tolerances = {normal_path(p): t for p, t in tolerances.items()}
        self.results: list[FieldResult] = []

    def add(self, path: str, where: str, equal: bool, legacy: Any, core: Any,
            kind: str) -> None:
        self.results.append(FieldResult(path, where, equal, legacy, core, kind))

    def walk(self, path: str, where: str, key: str, legacy: Any, core: Any) -> None:
        if legacy is None and core is None:
            return
        if self.ignore and _covers(self.ignore, normal_path(path)) is not None:
            return
        if _skipped(key):
            return
        if _is_id(key) and (isinstance(legacy, str) or isinstance(core, str)):
            self.id_field(path, where, legacy, core)
        elif isinstance(legacy, dict) and isinstance(core, dict):
            self.objects(path, where, legacy, core)
        elif isinstance(legacy, list) and isinstance(core, list):
            self.arrays(path, where, key, legacy, core)
        else:
            self.leaf(path, where, key, legacy, core)

    def id_field(self, path: str, where: str, legacy: Any, core: Any) -> None:
        mapped = self.ids.get(legacy) if isinstance(legacy, str) else None
        if mapped is None:
            return  # an id the map does not know: ids differ by nature
        self.add(path, where, mapped == core, legacy, core, "id")

    def objects(self, path: str, where: str, legacy: dict[str, Any],
                core: dict[str, Any]) -> None:
        for key in {**legacy, **core}:
            seg = _segment(str(key))
            self.walk(_join(path, seg), _join(where, seg), str(key), legacy.get(key),
                      core.get(key))

    def arrays(self, path: str, where: str, key: str, legacy: list[Any],
               core: list[Any]) -> None:
        by_sku = ((_sku_keyed(legacy) or not legacy) and (_sku_keyed(core) or not core)
                  and bool(legacy or core))
        if by_sku:
            by_sku_l = {i["sku"]: i for i in legacy}
            by_sku_c = {i["sku"]: i for i in core}
            generic = f"{path}[sku]"
            for sku in {**by_sku_l, **by_sku_c}:
                here = f"{where}[{sku}]"
                a, b = by_sku_l.get(sku), by_sku_c.get(sku)
                if a is None or b is None:
                    self.add(generic, here, False, a, b, "item")
                else:
                    self.objects(generic, here, a, b)
            return
        generic = f"{path}[]"
        for i in range(max(len(legacy), len(core))):
            a = legacy[i] if i < len(legacy) else None
            b = core[i] if i < len(core) else None
            self.walk(generic, f"{where}[{i}]", key, a, b)

    def leaf(self, path: str, where: str, key: str, legacy: Any, core: Any) -> None:
        tolerance = self.tolerances.get(normal_path(path))
        money = key in MONEY_FIELDS
        if tolerance is not None and _number(legacy) and _number(core):
            equal = abs(legacy - core) <= tolerance
        elif money:
            equal = (type(legacy) is int and type(core) is int  # not bool
                     and legacy == core)
        elif _number(legacy) and _number(core):
            equal = legacy == core
        else:
            equal = type(legacy) is type(core) and legacy == core
        self.add(path, where, equal, legacy, core, "money" if money else "value")


def _problem_fields(body: dict[str, Any]) -> list[str]:
    errors = body.get("errors")
    if not isinstance(errors, list):
        return []
    return sorted(str(e.get("field")) for e in errors if isinstance(e, dict))


def compare(
    legacy_status: int, legacy_body: Any, core_status: int, core_body: Any, *,
    ids: Mapping[str, str] | None = None, ignore: Sequence[str] = (),
    tolerances: Mapping[str, float] | None = None,
) -> list[FieldResult]:
    """Every compared field of two responses to the same request, equal or not.

    Bodies are parsed JSON values (or `RawBody`, see `parse_body`); `ids` maps the unit's
    legacy ids to the core's."""
    c = _Comparison(ids or {}, ignore, tolerances or {})
    c.add(STATUS, STATUS, legacy_status == core_status, legacy_status, core_status, "status")
    if legacy_status != core_status:
        return c.results
    if isinstance(legacy_body, RawBody) or isinstance(core_body, RawBody):
        a = legacy_body.data if isinstance(legacy_body, RawBody) else legacy_body
        b = core_body.data if isinstance(core_body, RawBody) else core_body
        c.add(BODY, BODY, a == b, _shown(a), _shown(b), "body")
        return c.results
    problems = isinstance(legacy_body, dict) and isinstance(core_body, dict)
    if not 200 <= legacy_status < 300 and problems:
        c.walk("type", "type", "type", legacy_body.get("type"), core_body.get("type"))
        fields_l, fields_c = _problem_fields(legacy_body), _problem_fields(core_body)
        if fields_l or fields_c:
            c.add("errors[].field", "errors[].field", fields_l == fields_c, fields_l,
                  fields_c, "value")
        return c.results
    if isinstance(legacy_body, dict) and isinstance(core_body, dict):
        c.objects("", "", legacy_body, core_body)
    elif isinstance(legacy_body, list) and isinstance(core_body, list):
        c.arrays(BODY, BODY, BODY, legacy_body, core_body)
    else:
        c.leaf(BODY, BODY, BODY, legacy_body, core_body)
    return c.results


def mismatches(results: Sequence[FieldResult]) -> list[FieldResult]:
    return [r for r in results if not r.equal]


# -- redaction --------------------------------------------------------------------------------


def is_customer_path(path: str) -> bool:
    """Whether a field path holds customer data (email, names, addresses, phones)."""
    segments = normal_path(path).split(".")
    for i, seg in enumerate(segments):
        low = seg.lower()
        if low in CUSTOMER_FIELDS or any(c in low for c in CUSTOMER_CONTAINERS):
            return True
        if low == "name" and not (i > 0 and segments[i - 1] in PRODUCT_CONTAINERS):
            return True
    return False


def scrub(path: str, value: Any) -> Any:
    """`value` at `path` with every customer field inside it replaced by `[redacted]`."""
    if path and is_customer_path(path):
        return REDACTED if value is not None else None
    if isinstance(value, dict):
        return {k: scrub(_join(path, _segment(str(k))), v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(f"{path}[]", v) for v in value]
    return value


def _shown(value: Any) -> Any:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return value


def _clip(value: Any) -> Any:
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) <= _MAX_SHOWN:
        return value
    return text[: _MAX_SHOWN - 1] + "…"


def example(result: FieldResult) -> dict[str, Any]:
    """A result as people may see it: customer data redacted, long values clipped."""
    return {
        "field": result.path, "where": result.where, "kind": result.kind,
        "legacy": _clip(scrub(result.path, result.legacy)),
        "core": _clip(scrub(result.path, result.core)),
    }
