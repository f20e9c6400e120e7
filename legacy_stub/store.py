"""In-memory state of the stub: carts, checkouts, orders and idempotency records.

One lock guards every read-modify-write. Callers hold `store.lock` for the whole of an
operation and never await while holding it, so operations are atomic whether they run on
the event loop or in worker threads.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field

from legacy_stub.models import Cart, Checkout, Order, Outcome

ID_PREFIX = "lg_"


def new_id(kind: str) -> str:
    """A fresh legacy id such as `lg_cart_3f9a…`; the `lg_` prefix marks legacy's ids."""
    return f"{ID_PREFIX}{kind}_{secrets.token_hex(12)}"


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """What one Idempotency-Key did, and for which request (checkout and body)."""

    fingerprint: str
    outcome: Outcome


@dataclass
class InMemoryStore:
    lock: threading.Lock = field(default_factory=threading.Lock)
    carts: dict[str, Cart] = field(default_factory=dict)
    checkouts: dict[str, Checkout] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    attempts: dict[str, AttemptRecord] = field(default_factory=dict)
