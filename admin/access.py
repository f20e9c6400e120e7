"""Who may reach the admin surface (/metrics, /_strangler/*, /dashboard, /livez, /readyz),
and on which port.

- Without an admin port, the admin paths are served on the main port (the default).
- With one (`STRANGLER_ADMIN_PORT`), they are served only there; on the main port they
  answer 404 (and /dashboard is checkout traffic like any other path), so metrics and state
  never leak through the public port. The admin port serves nothing else.
- With a token (`STRANGLER_ADMIN_TOKEN`), admin requests need `Authorization: Bearer
  <token>` (compared in constant time); without it: 401. The dashboard's page and files
  are the exception (`TokenGate`): they hold no data, and a browser cannot send a Bearer
  token when it navigates. So are the probes, /livez and /readyz: they say only whether the
  replica serves, and a kubelet's httpGet probe cannot send a Secret.

Paths are judged in their normalised form, so `//metrics` or `/x/../metrics` are admin
paths too.
"""

from __future__ import annotations

import hmac
from typing import Any

from proxy.context import normalize_path
from proxy.problems import send_problem

ADMIN_PREFIX = "/_strangler/"
API_PREFIX = "/_strangler/api/"
METRICS_PATH = "/metrics"
PAGE_PATH = "/dashboard"
PROBE_PATHS = ("/livez", "/readyz")
CHALLENGE = [(b"www-authenticate", b'Bearer realm="strangler"')]


def _normalized(path: str) -> str:
    return normalize_path(path) if "//" in path or "/." in path else path


_EXACT = (METRICS_PATH, ADMIN_PREFIX[:-1], *PROBE_PATHS)


def _admin(path: str) -> bool:
    return path in _EXACT or path.startswith(ADMIN_PREFIX)


def is_admin_path(path: str) -> bool:
    if _admin(path):
        return True
    return ("//" in path or "/." in path) and _admin(normalize_path(path))


def is_page_path(path: str) -> bool:
    """The dashboard's page and the files beside it (/dashboard, /dashboard/...)."""
    return path == PAGE_PATH or path.startswith(PAGE_PATH + "/")


def is_probe_path(path: str) -> bool:
    """/livez and /readyz, which need no token."""
    return path in PROBE_PATHS


def _open(path: str) -> bool:
    """Paths served without the token: the dashboard's page and files, the probes."""
    return is_page_path(path) or is_probe_path(path)


def is_dashboard_path(path: str) -> bool:
    """The page, its files (/dashboard/...) and the API (/_strangler/api/...)."""
    path = _normalized(path)
    return is_page_path(path) or path.startswith(API_PREFIX)


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


class TokenGate:
    """ASGI middleware, the one place the admin token is checked: every HTTP request but
    the dashboard's page and files and the probes needs `Authorization: Bearer TOKEN` when
    a token is set (401 problem+json with `WWW-Authenticate` otherwise). Expects normalised
    paths."""

    def __init__(self, app: Any, token: bytes | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or _open(scope["path"]) or bearer_ok(
            scope["headers"], self.token
        ):
            await self.app(scope, receive, send)
            return
        await send_problem(send, 401, "unauthorized", "admin endpoints need 'Authorization: "
                           "Bearer TOKEN' (STRANGLER_ADMIN_TOKEN)", scope["path"], CHALLENGE)
