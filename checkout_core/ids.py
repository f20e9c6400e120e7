"""Id minting. The core's ids start with `co_` so the proxy can route by prefix."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

CART = "co_cart_"
CHECKOUT = "co_chk_"
ORDER = "co_ord_"
EVENT = "co_evt_"
DEAD_LETTER = "co_dlq_"
PAYMENT = "pay_"
OWNER = "req_"


def new_id(prefix: str) -> str:
    """`prefix` + 24 random hex digits (96 bits)."""
    return prefix + secrets.token_hex(12)


def utc_now() -> datetime:
    return datetime.now(UTC)
