"""What every part of the harness shares: the request it sends, the upstream's answer, the
targets' names, the thresholds of the performance issue, logging and its error type."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RULES_FILE = REPO / "rules" / "checkout.yaml"

# What the upstream answers: a small cart-like JSON document.
BODY = (b'{"id":"co_cart_0123456789abcdef","country":"IE","currency":"EUR","status":"open",'
        b'"items":[],"subtotal":0,"tax":0,"total":0}')
REQUEST_PATH = "/carts"  # a checkout route (the proxy forwards only those), no id: RULE
FUNNEL_HEADERS = {"X-Checkout-Funnel": "warranties", "X-Country": "IE"}
SESSIONS = 1000  # distinct X-Checkout-Session values, rotated request by request

TARGET_ORDER = ("direct", "baseline", "full", "nginx")
OTEL_TARGET = "full-otel"  # --otel: the full proxy with tracing on, 100% sampled
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "transfer-encoding", "upgrade",
})

# Thresholds of the performance issue.
MIN_THROUGHPUT_RATIO = 1.0
MAX_C1_OVERHEAD_MS = 0.3
C_MID, C_HIGH = 32, 128


def session_id(i: int) -> str:
    return f"u_{i:024x}"  # the proxy's own unit format: u_ + 24 hex digits


@dataclass(frozen=True)
class Request:
    """What the load generators send, request after request: `method` `path` with
    `headers` and `body`, and an `X-Checkout-Session` rotating over `sessions` units
    (`session_id(0)` ... `session_id(sessions - 1)`). The default is the bench's own
    (`GET /carts` through the warranties funnel); `loadtests.shadowbench` sends cart
    creations (`POST /carts` with a JSON body), which the shadow mirrors."""

    method: str = "GET"
    path: str = REQUEST_PATH
    headers: dict[str, str] = field(default_factory=lambda: dict(FUNNEL_HEADERS))
    body: bytes = b""
    sessions: int = SESSIONS


DEFAULT_REQUEST = Request()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class HarnessError(RuntimeError):
    pass
