"""Request context: funnel, country, sticky unit and named entity, from raw ASGI values.

Pure functions over the path and the raw header list; no web framework involved.
"""

from __future__ import annotations

import posixpath
import re
import secrets
from urllib.parse import quote

from proxy.decision import RequestContext
from proxy.rules import Funnel, RuleSet

Headers = list[tuple[bytes, bytes]]

_UNIT = re.compile(r"^[A-Za-z0-9_.:-]{8,128}$")
_ENTITY_ROOTS = frozenset({"carts", "checkouts", "orders"})
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def normalize_path(path: str) -> str:
    """One canonical form for matching and forwarding: no `//`, no dot segments.

    `path` is the ASGI (percent-decoded) path, so `%2F` has already become `/`.
    """
    if not path.startswith("/"):
        path = "/" + path
    trailing = path.endswith("/") and len(path) > 1
    clean = posixpath.normpath(path)
    if clean.startswith("//"):
        clean = "/" + clean.lstrip("/")
    if trailing and clean != "/":
        clean += "/"
    return clean


def quote_path(path: str) -> str:
    return quote(path, safe=_PATH_SAFE)


def mint_unit() -> str:
    return "u_" + secrets.token_hex(12)


def header_value(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _cookie(headers: Headers, name: str) -> str | None:
    prefix = name + "="
    for key, value in headers:
        if key != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            part = part.strip()
            if part.startswith(prefix):
                return part[len(prefix):].strip('"')
    return None


def _funnel(rules: RuleSet, headers: Headers, path: str) -> tuple[Funnel | None, str]:
    raw = header_value(headers, rules.funnel_header.encode())
    if raw is not None:
        funnel = rules.by_header.get(raw.decode("latin-1").strip().lower())
        if funnel is not None:
            return funnel, _strip(funnel, path)
    for prefix, funnel in rules.by_prefix:
        if path == prefix or path.startswith(prefix + "/"):
            return funnel, _strip(funnel, path)
    return None, path


def _strip(funnel: Funnel, path: str) -> str:
    prefix = funnel.path_prefix
    if prefix is None or not funnel.strip_prefix:
        return path
    if path == prefix or path.startswith(prefix + "/"):
        return path[len(prefix):] or "/"
    return path


def _country(rules: RuleSet, headers: Headers) -> str | None:
    for name in rules.country_headers:
        raw = header_value(headers, name.encode())
        if raw:
            code = raw.decode("latin-1").strip().upper()
            if len(code) == 2 and code.isalpha() and code.isascii():
                return code
    return None


def entity_id(path: str) -> str | None:
    """The id a contract path names: /carts/{id}..., /checkouts/{id}..., /orders/{id}."""
    parts = path.split("/", 3)
    if len(parts) >= 3 and parts[1] in _ENTITY_ROOTS and parts[2]:
        return parts[2]
    return None


def unit_of(rules: RuleSet | None, headers: Headers) -> str | None:
    cookie = rules.session_cookie if rules is not None else "checkout_session"
    header = rules.session_header if rules is not None else "x-checkout-session"
    raw = header_value(headers, header.encode())
    value = raw.decode("latin-1").strip() if raw is not None else _cookie(headers, cookie)
    return value if value and _UNIT.match(value) else None


def extract_context(rules: RuleSet | None, path: str, headers: Headers) -> RequestContext:
    """Everything the decision needs to know about one request."""
    path = normalize_path(path)
    unit = unit_of(rules, headers)
    minted = unit is None
    if unit is None:
        unit = mint_unit()
    if rules is None:
        return RequestContext(None, None, unit, minted, entity_id(path), path)
    funnel, upstream_path = _funnel(rules, headers, path)
    return RequestContext(
        funnel=funnel,
        country=_country(rules, headers),
        unit=unit,
        unit_minted=minted,
        entity_id=entity_id(upstream_path),
        path=upstream_path,
    )
