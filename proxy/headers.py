"""Header hygiene for forwarding: hop-by-hop removal, X-Forwarded-*, Via."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Headers = list[tuple[bytes, bytes]]

# RFC 9110 7.6.1 plus the de-facto ones.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
    b"proxy-authorization", b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
DECISION_HEADERS = frozenset({b"x-checkout-backend", b"x-checkout-decision"})
# The QA override (proxy.override) is for the proxy only: never forwarded.
OVERRIDE_HEADERS = frozenset({b"x-checkout-force", b"x-checkout-force-token"})
FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"})
# Only the proxy's mirror marks a request as shadow traffic (docs/shadow.md): a client that
# sent it would have its real cart treated as a shadow one by the core.
SHADOW_HEADER = b"x-checkout-shadow"


_REQUEST_DROP = HOP_BY_HOP | DECISION_HEADERS | OVERRIDE_HEADERS | {b"host", SHADOW_HEADER}
_REQUEST_DROP_UNTRUSTED = _REQUEST_DROP | FORWARDED
_RESPONSE_DROP = HOP_BY_HOP | DECISION_HEADERS


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(tokens)


class TrustedProxies:
    """Peers whose X-Forwarded-For (and, by default, country headers) are believed; everyone
    else's are replaced (or ignored)."""

    _MAX_CACHED = 4096

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(e, strict=False) for e in entries)
        self._cache: dict[str, bool] = {}  # peer address -> trusted, bounded

    def trusts(self, peer: str | None) -> bool:
        if not self.networks or peer is None:
            return False
        trusted = self._cache.get(peer)
        if trusted is None:
            try:
                address = ipaddress.ip_address(peer)
            except ValueError:
                return False
            trusted = any(address in network for network in self.networks)
            if len(self._cache) >= self._MAX_CACHED:
                self._cache.clear()
            self._cache[peer] = trusted
        return trusted


def upstream_request_headers(
    headers: Headers, *, peer: str | None, scheme: str, via: bytes, trust: bool,
    extra: Headers = (),  # type: ignore[assignment]
) -> list[tuple[str, str]]:
    """Headers for the upstream request: hop-by-hop, Host and decision headers removed,
    X-Forwarded-For/Proto/Host and Via set; `trust`: the peer is a trusted proxy, whose
    X-Forwarded-* are kept and extended."""
    drop = _REQUEST_DROP if trust else _REQUEST_DROP_UNTRUSTED
    tokens = connection_tokens(headers)  # static sets; a union only when Connection names some
    if tokens:
        drop = drop | tokens
    out: list[tuple[str, str]] = []
    host = b""
    prior_xff: list[bytes] = []
    prior_via: list[bytes] = []
    for name, value in headers:
        if name == b"host":
            host = value
        if name in drop:
            continue
        if name == b"x-forwarded-for":
            prior_xff.append(value)
            continue
        if name == b"via":
            prior_via.append(value)
            continue
        if trust and name in (b"x-forwarded-proto", b"x-forwarded-host"):
            continue  # replaced below unless the trusted peer set them
        out.append((name.decode("latin-1"), value.decode("latin-1")))
    chain = [*prior_xff, peer.encode() if peer else b"unknown"]
    out.append(("x-forwarded-for", b", ".join(chain).decode("latin-1")))
    out.append(("x-forwarded-proto", _trusted_or(headers, b"x-forwarded-proto", trust, scheme)))
    out.append(("x-forwarded-host",
                _trusted_or(headers, b"x-forwarded-host", trust, host.decode("latin-1"))))
    out.append(("via", b", ".join([*prior_via, via]).decode("latin-1")))
    out.extend((n.decode("latin-1"), v.decode("latin-1")) for n, v in extra)
    return out


def _trusted_or(headers: Headers, name: bytes, trust: bool, fallback: str) -> str:
    if trust:
        for key, value in headers:
            if key == name:
                return value.decode("latin-1")
    return fallback


def downstream_response_headers(raw: Iterable[tuple[bytes, bytes]], via: bytes) -> Headers:
    """Response headers for the client: repeated headers (Set-Cookie) kept one by one,
    hop-by-hop and upstream decision headers removed, Via appended."""
    raw = list(raw)
    drop = _RESPONSE_DROP
    tokens = connection_tokens(raw)
    if tokens:
        drop = drop | tokens
    out: Headers = []
    prior_via: list[bytes] = []
    for name, value in raw:
        lower = name.lower()
        if lower in drop:
            continue
        if lower == b"via":
            prior_via.append(value)
            continue
        out.append((lower, value))
    out.append((b"via", b", ".join([*prior_via, via])))
    return out
