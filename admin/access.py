"""Who may reach the admin surface (/metrics, /_strangler/*), and on which port.

- Without an admin port, the admin paths are served on the main port (the default).
- With one (`STRANGLER_ADMIN_PORT`), they are served only there; on the main port they
  answer 404, so metrics and state never leak through the public port. The admin port
  serves nothing else.
- With a token (`STRANGLER_ADMIN_TOKEN`), admin requests need `Authorization: Bearer
  <token>` (compared in constant time); without it: 401.

Paths are judged in their normalised form, so `//metrics` or `/x/../metrics` are admin
paths too.
"""

from __future__ import annotations

import hmac

from proxy.context import normalize_path

ADMIN_PREFIX = "/_strangler/"
METRICS_PATH = "/metrics"


def _admin(path: str) -> bool:
    return path in (METRICS_PATH, ADMIN_PREFIX[:-1]) or path.startswith(ADMIN_PREFIX)


def is_admin_path(path: str) -> bool:
    if _admin(path):
        return True
    return ("//" in path or "/." in path) and _admin(normalize_path(path))


def bearer_ok(headers: list[tuple[bytes, bytes]], token: bytes | None) -> bool:
    """True when no token is configured, or the request carries it as a Bearer token."""
    if not token:
        return True
    for name, value in headers:
        if name == b"authorization":
            scheme, _, given = value.partition(b" ")
            return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token)
    return False


def on_port(scope: dict[str, object], port: int | None) -> bool:
    """Whether the request arrived on the listening port `port`."""
    server = scope.get("server")
    return port is not None and isinstance(server, tuple | list) and len(server) > 1 and (
        server[1] == port
    )
