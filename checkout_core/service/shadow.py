"""Expiry of shadow resources: a background task that deletes old shadow carts.

Shadow carts (`domain.shadow`) are only there to be compared with legacy's; nothing reads
them once the proxy's id map has forgotten them. `ShadowExpiry` deletes, every
`interval_seconds`, the shadow carts created more than `ttl_seconds` ago, with their items
and their checkouts, in batches of at most `batch_size` carts (one short transaction each,
so real traffic never waits long for the write lock). Real carts are never touched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

from checkout_core.service.ports import Clock, ShadowExpired, Store

log = logging.getLogger(__name__)


def _nothing(expired: ShadowExpired) -> None:
    return None


class ShadowExpiry:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        ttl_seconds: float,
        batch_size: int = 500,
        interval_seconds: float = 60.0,
        on_expired: Callable[[ShadowExpired], None] = _nothing,
    ) -> None:
        self.store = store
        self.clock = clock
        self.ttl = timedelta(seconds=ttl_seconds)
        self.batch_size = batch_size
        self.interval_seconds = interval_seconds
        self.on_expired = on_expired

    async def run_once(self) -> ShadowExpired:
        """Delete one batch of expired shadow carts (and their checkouts)."""
        before = self.clock() - self.ttl
        expired = await self.store.run(lambda uow: uow.shadow.expire(before, self.batch_size))
        if expired.carts:
            self.on_expired(expired)
        return expired

    async def sweep(self) -> ShadowExpired:
        """Delete every expired shadow cart, batch after batch; what was deleted in all."""
        carts = checkouts = 0
        while True:
            expired = await self.run_once()
            carts += expired.carts
            checkouts += expired.checkouts
            if expired.carts < self.batch_size:
                return ShadowExpired(carts, checkouts)

    async def run(self) -> None:
        """Sweep every `interval_seconds` until cancelled; failures are logged and retried."""
        while True:
            try:
                expired = await self.sweep()
            except Exception:
                log.exception("shadow expiry failed; retrying")
            else:
                if expired.carts:
                    log.info("shadow expiry: deleted %d carts and %d checkouts",
                             expired.carts, expired.checkouts)
            await asyncio.sleep(self.interval_seconds)
