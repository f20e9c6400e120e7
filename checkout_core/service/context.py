"""What every use case needs: the store, the catalog, the clock, ids, a commit hook, and the
pricing drift of a fault drill."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from checkout_core.domain.catalog import Catalog
from checkout_core.domain.events import Event, new_event
from checkout_core.domain.pricing import PricingDrift
from checkout_core.ids import EVENT
from checkout_core.service.ports import Clock, IdFactory, Store, UnitOfWork

T = TypeVar("T")


def _nothing() -> None:
    return None


def _no_drift() -> PricingDrift | None:
    return None


@dataclass(frozen=True, slots=True)
class ServiceContext:
    store: Store
    catalog: Catalog
    clock: Clock
    ids: IdFactory
    events_committed: Callable[[], None] = _nothing
    """Called after a transaction that wrote events commits (wakes the outbox relay)."""
    pricing_drift: Callable[[], PricingDrift | None] = _no_drift
    """The pricing drift in force (the fault switch's), read at each pricing."""

    def event(self, type_: str, aggregate_id: str, data: Mapping[str, Any]) -> Event:
        return new_event(self.ids(EVENT), type_, aggregate_id, self.clock(), data)

    async def write(self, work: Callable[[UnitOfWork], T]) -> T:
        result = await self.store.run(work)
        self.events_committed()
        return result

    async def read(self, work: Callable[[UnitOfWork], T]) -> T:
        return await self.store.run(work, write=False)
