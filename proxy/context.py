"""Request context: funnel, country, sticky unit and named entity, from raw ASGI values.

Pure functions over the path and the raw header list; no web framework involved.
"""

from __future__ import annotations

import posixpath
import re
import secrets
from urllib.parse import quote, unquote

import pycountry

from control.decision import RequestContext
from control.rules import Funnel, RuleSet

Headers = list[tuple[bytes, bytes]]

_UNIT = re.compile(r"^[A-Za-z0-9_.:-]{8,128}$")
_ENTITY_ROOTS = frozenset({"carts", "checkouts", "orders"})
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
# A request target's path as the client may send it on: unreserved and sub-delimiter
# characters and well-formed percent-escapes, no encoded slash (it would move a segment
# boundary between what the decision saw and what the backend sees).
_RAW_PATH = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%(?![2][fF])[0-9A-Fa-f]{2})*")
ISO_COUNTRIES = frozenset(c.alpha_2 for c in pycountry.countries)


def normalize_path(path: str) -> str:
    """One canonical form for matching and forwarding: no `//`, no dot segments.

    `path` is the ASGI (percent-decoded) path, so `%2F` has already become `/`.
    """
    if path.startswith("/") and "//" not in path and "/." not in path:
        return path  # already canonical: the common case, no work
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


def forward_path(raw_path: bytes | None, path: str, upstream_path: str) -> str:
    """The path to send upstream for a request the decision saw as `upstream_path`.

    `path` is the ASGI (decoded) path and `raw_path` the bytes the client sent. When those
    bytes spell the path the decision was made on segment for segment (no `//`, no dot
    segments, no `%2F`; the funnel prefix, if stripped, spelled out plainly), the client's
    own escapes go upstream, as nginx does: `/carts/%ff` and `/carts/%fe` stay two
    requests instead of both becoming `/carts/%EF%BF%BD`. Otherwise the normalised path
    goes, re-encoded (`quote_path`), so `//`, `%2F` and `..` can never make the backend see
    another path than the one that was routed.
    """
    if not raw_path or b"%" not in raw_path or not _RAW_PATH.fullmatch(raw_path) or (
        normalize_path(path) != path
    ):
        return quote_path(upstream_path)
    raw = raw_path.decode("ascii")
    if upstream_path != path:  # a funnel prefix was stripped: whole segments of it
        prefix = path[:len(path) - len(upstream_path)] if path.endswith(upstream_path) else path
        raw_prefix = "/".join(raw.split("/")[:prefix.count("/") + 1])
        if raw_prefix != prefix:
            return quote_path(upstream_path)
        raw = raw[len(raw_prefix):] or "/"
    return raw if unquote(raw) == upstream_path else quote_path(upstream_path)


def mint_unit() -> str:
    return "u_" + secrets.token_hex(12)


def _cookie(headers: Headers, name: str) -> str | None:
    """The value of cookie `name`, found with byte searches (no split of the whole header)."""
    prefix = name.encode() + b"="
    for key, value in headers:
        if key != b"cookie":
            continue
        at = value.find(prefix)
        while at != -1:
            if at == 0 or value[at - 1] in b"; ":  # a whole cookie name, not a suffix
                start = at + len(prefix)
                end = value.find(b";", start)
                raw = value[start:] if end == -1 else value[start:end]
                return raw.strip().strip(b'"').decode("latin-1")
            at = value.find(prefix, at + 1)
    return None


def _funnel(
    rules: RuleSet, fields: dict[bytes, bytes], path: str,
) -> tuple[Funnel | None, str]:
    raw = fields.get(rules.funnel_header_b)
    if raw is not None:
        funnel = rules.by_header.get(raw.decode("latin-1").strip().lower())
        if funnel is not None:
            return funnel, _strip(funnel, path)
    candidates = rules.prefix_index.get(path.split("/", 2)[1]) if rules.prefix_index else None
    for prefix, funnel in candidates or ():
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


_COUNTRY_CODES: dict[bytes, str | None] = {}  # raw header value -> code; a few hundred at most


def _country_code(raw: bytes) -> str | None:
    """An ISO 3166-1 alpha-2 code (any case, spaces around), else None (`QQ`, `XX`...)."""
    code: str | None = raw.decode("latin-1").strip().upper()
    if code not in ISO_COUNTRIES:
        code = None
    if len(_COUNTRY_CODES) < 4096:
        _COUNTRY_CODES[raw] = code
    return code


def _country(rules: RuleSet, fields: dict[bytes, bytes]) -> str | None:
    for name in rules.country_headers_b:
        raw = fields.get(name)
        if raw:
            code = _COUNTRY_CODES[raw] if raw in _COUNTRY_CODES else _country_code(raw)
            if code is not None:
                return code
    return None


def entity_id(path: str) -> str | None:
    """The id a contract path names: /carts/{id}..., /checkouts/{id}..., /orders/{id}."""
    parts = path.split("/", 3)
    if len(parts) >= 3 and parts[1] in _ENTITY_ROOTS and parts[2]:
        return parts[2]
    return None


def _unit(rules: RuleSet | None, headers: Headers, fields: dict[bytes, bytes]) -> str | None:
    header = rules.session_header_b if rules is not None else b"x-checkout-session"
    raw = fields.get(header)
    if raw is not None:
        value: str | None = raw.decode("latin-1").strip()
    else:
        value = _cookie(headers, rules.session_cookie if rules is not None else "checkout_session")
    return value if value and _UNIT.match(value) else None


def unit_of(rules: RuleSet | None, headers: Headers) -> str | None:
    """The sticky unit a request names (session header, else cookie), if well-formed."""
    return _unit(rules, headers, dict(headers))


def extract_context(
    rules: RuleSet | None, path: str, headers: Headers, country_trusted: bool = True,
) -> RequestContext:
    """Everything the decision needs to know about one request. The country headers are
    read only when `country_trusted` (the peer may set them: `ProxyApp.country_trusted`)."""
    path = normalize_path(path)
    fields = dict(headers)  # one pass in C; names are lower-case in ASGI
    unit = _unit(rules, headers, fields)
    minted = unit is None
    if unit is None:
        unit = mint_unit()
    if rules is None:
        return RequestContext(None, None, unit, minted, entity_id(path), path)
    funnel, upstream_path = _funnel(rules, fields, path)
    return RequestContext(
        funnel=funnel,
        country=_country(rules, fields) if country_trusted else None,
        unit=unit,
        unit_minted=minted,
        entity_id=entity_id(upstream_path),
        path=upstream_path,
    )
