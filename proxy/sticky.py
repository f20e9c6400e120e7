"""Sticky assignments: which backend a unit's in-flight checkout started on.

The rule (`starts_checkout`): a unit's checkout is "in flight" from the answer that gave it
something to come back to, until the funnel's `order_placed` signal is seen for that unit, or
until it has been idle for the funnel file's `stickiness.idle_ttl_seconds`:
- a backend created something for a request that named no id (201 to a RULE, DEFAULT or
  FAILOVER decision: `POST /carts` in the checkout contract), or
- the funnel's `checkout_started` signal (the backend that owns the cart).
While in flight the unit keeps its backend (STICKY), whatever the percentage does; lowering
a percentage therefore moves only units with no checkout in flight. Every other answer
(browsing, health probes, errors, a unit minted for a request that never creates a cart)
writes nothing: a crawler costs no sticky state.

Local state is a bounded LRU with an idle TTL (no unbounded growth). In distributed mode the
assignments are also written to Redis (fire and forget, within a write budget: see
`proxy.sticky_redis`) and read from it on a local miss.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Protocol

from control.decision import Backend, Reason

CHECKOUT_STARTED = "checkout_started"
CREATED = 201
_ASSIGNED = frozenset({Reason.RULE, Reason.DEFAULT, Reason.FAILOVER})
_SERVED = _ASSIGNED | {Reason.OWNER}


def starts_checkout(reason: Reason, status: int, signals: tuple[str, ...]) -> bool:
    """Whether an answer starts (or renews) the unit's in-flight checkout (module doc).

    A 201 to a RULE, DEFAULT or FAILOVER decision is always to a request that named no id
    (a request naming one is routed by its OWNER); KILL_SWITCH, STICKY and ERROR answers
    never start one."""
    if CHECKOUT_STARTED in signals:
        return reason in _SERVED
    return status == CREATED and reason in _ASSIGNED


class StickyStore(Protocol):
    async def get(self, key: str) -> Backend | None: ...

    async def set(self, key: str, backend: Backend, ttl: int) -> None: ...

    async def release(self, key: str) -> None: ...

    async def close(self) -> None: ...


class LocalSticky:
    """In-process LRU with idle expiry; every operation is O(1).

    An entry is one float, its expiry time: positive for the core, negative for legacy (a
    tuple per entry cost 11 MB more at the default 200,000 units)."""

    def __init__(self, max_units: int) -> None:
        self.max_units = max_units
        self._entries: OrderedDict[str, float] = OrderedDict()
        self._ttl = 3600  # the idle TTL of the last assignment; a hit extends by it

    def __len__(self) -> int:
        return len(self._entries)

    def get_local(self, key: str, now: float | None = None) -> Backend | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = time.monotonic() if now is None else now
        if abs(entry) < now:
            del self._entries[key]
            return None
        self._entries[key] = now + self._ttl if entry > 0 else -(now + self._ttl)
        self._entries.move_to_end(key)
        return Backend.CORE if entry > 0 else Backend.LEGACY

    def set_local(self, key: str, backend: Backend, ttl: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._ttl = ttl
        self._entries[key] = now + ttl if backend is Backend.CORE else -(now + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_units:
            self._entries.popitem(last=False)

    def release_local(self, key: str) -> None:
        self._entries.pop(key, None)

    async def get(self, key: str) -> Backend | None:
        return self.get_local(key)

    async def set(self, key: str, backend: Backend, ttl: int) -> None:
        self.set_local(key, backend, ttl)

    async def release(self, key: str) -> None:
        self.release_local(key)

    async def close(self) -> None:
        self._entries.clear()
