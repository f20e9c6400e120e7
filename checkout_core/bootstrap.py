"""Composition root: the one place where settings become adapters, services and tasks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
from starlette.applications import Starlette

from checkout_core import downstream_fake
from checkout_core.adapters.fake_gateway import FakeGateway, FakeGatewayConfig, open_ledger
from checkout_core.adapters.redis_stream import RedisEventStream
from checkout_core.adapters.sqlite_db import SqliteDatabase
from checkout_core.adapters.sqlite_store import SqliteStore
from checkout_core.adapters.sqlite_stream import SqliteEventStream
from checkout_core.config import CoreSettings
from checkout_core.domain.catalog import seeded_catalog
from checkout_core.faults import Faults, FaultSwitch
from checkout_core.ids import new_id, utc_now
from checkout_core.messaging.downstream import HttpDownstream
from checkout_core.messaging.order_sync import ConsumerConfig, OrderSyncConsumer
from checkout_core.messaging.relay import OutboxRelay
from checkout_core.messaging.stream import EventStream
from checkout_core.metrics import CoreMetrics
from checkout_core.retry import Backoff
from checkout_core.service.carts import CartService
from checkout_core.service.context import ServiceContext
from checkout_core.service.ordering import OrderService
from checkout_core.service.payments import PaymentProcessor
from checkout_core.service.shadow import ShadowExpiry

FAKE_DOWNSTREAM_BASE = "http://downstream.internal"


def open_database(settings: CoreSettings) -> SqliteDatabase:
    db = SqliteDatabase(settings.db_path, settings.db_busy_timeout_ms, settings.db_synchronous)
    db.initialize()
    return db


def open_event_stream(settings: CoreSettings, db: SqliteDatabase | None = None) -> EventStream:
    """Redis Streams when a Redis URL is set, else the stream in the SQLite file."""
    if settings.redis_url:
        return RedisEventStream.from_url(
            settings.redis_url, settings.redis_prefix, settings.processed_ttl_seconds
        )
    return SqliteEventStream(db or open_database(settings))


def build_gateway(settings: CoreSettings) -> FakeGateway:
    """The fake gateway, on its own ledger file (`gateway_ledger_path`) unless in memory."""
    config = FakeGatewayConfig(
        latency_seconds=settings.gateway_latency_ms / 1000,
        decline_rate=settings.gateway_decline_rate,
        timeout_rate=settings.gateway_timeout_rate,
        unknown_rate=settings.gateway_unknown_rate,
        timeout_seconds=settings.gateway_timeout_ms / 1000,
    )
    ledger = open_ledger(settings.gateway_ledger_path, settings.db_busy_timeout_ms,
                         settings.db_synchronous)
    return FakeGateway(config, random.Random(settings.gateway_seed), ledger=ledger)


def build_fault_switch(settings: CoreSettings, gateway: FakeGateway) -> FaultSwitch:
    """The fault drills' switch, from the `fault_*` settings; it declines through `gateway`."""
    drift = settings.fault_pricing_drift
    faults = Faults(latency_ms=settings.fault_latency_ms,
                    latency_jitter_ms=settings.fault_latency_jitter_ms,
                    error_rate=settings.fault_error_rate, decline_rate=gateway.decline_rate,
                    pricing_drift=drift.to_drift() if drift is not None else None)
    return FaultSwitch(faults, gateway, random.Random(settings.fault_seed))


def consumer_name(settings: CoreSettings) -> str:
    return settings.consumer_name or f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class Core:
    """Everything one core process runs; `start`/`stop` own the background tasks."""

    settings: CoreSettings
    db: SqliteDatabase
    stream: EventStream
    gateway: FakeGateway
    metrics: CoreMetrics
    carts: CartService
    orders: OrderService
    relay: OutboxRelay
    downstream_app: Starlette | None
    downstream_client: httpx.AsyncClient
    consumer: OrderSyncConsumer
    faults: FaultSwitch
    shadow_expiry: ShadowExpiry
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        if self.settings.run_relay:
            self.tasks.append(asyncio.create_task(self.relay.run(), name="outbox-relay"))
        if self.settings.run_consumer:
            self.tasks.append(asyncio.create_task(self.consumer.run(), name="order-sync"))
        if self.settings.run_shadow_expiry:
            self.tasks.append(asyncio.create_task(self.shadow_expiry.run(),
                                                  name="shadow-expiry"))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()
        await self.downstream_client.aclose()
        await self.stream.close()

    def task_running(self, name: str) -> bool:
        return any(t.get_name() == name and not t.done() for t in self.tasks)


def _downstream(settings: CoreSettings) -> tuple[Starlette | None, httpx.AsyncClient]:
    timeout = httpx.Timeout(settings.downstream_timeout_ms / 1000)
    if settings.downstream_url:
        return None, httpx.AsyncClient(base_url=settings.downstream_url, timeout=timeout)
    app = downstream_fake.create_app(failure_rate=settings.downstream_fake_failure_rate)
    transport = httpx.ASGITransport(app=app)
    return app, httpx.AsyncClient(transport=transport, base_url=FAKE_DOWNSTREAM_BASE,
                                  timeout=timeout)


def _consumer(
    settings: CoreSettings, stream: EventStream, client: httpx.AsyncClient, metrics: CoreMetrics
) -> OrderSyncConsumer:
    config = ConsumerConfig(
        group=settings.consumer_group,
        consumer=consumer_name(settings),
        batch_size=settings.consumer_batch_size,
        block_seconds=settings.consumer_block_ms / 1000,
        backoff=Backoff(settings.consumer_max_attempts, settings.consumer_backoff_base_ms / 1000,
                        settings.consumer_backoff_max_ms / 1000),
        max_deliveries=settings.consumer_max_deliveries,
        claim_idle_seconds=settings.consumer_claim_idle_ms / 1000,
    )
    return OrderSyncConsumer(stream, HttpDownstream(client), config,
                             observe=metrics.consumer_outcome)


def bootstrap(settings: CoreSettings, gateway: FakeGateway | None = None) -> Core:
    db = open_database(settings)
    store = SqliteStore(db)
    stream = open_event_stream(settings, db)
    metrics = CoreMetrics()
    gateway = gateway or build_gateway(settings)
    relay = OutboxRelay(store, stream, utc_now, settings.relay_batch_size,
                        settings.relay_poll_ms / 1000, on_published=metrics.published)
    faults = build_fault_switch(settings, gateway)
    ctx = ServiceContext(store, seeded_catalog(), utc_now, new_id, events_committed=relay.wake,
                         pricing_drift=faults.pricing_drift)
    payments = PaymentProcessor(
        gateway,
        Backoff(settings.payment_max_attempts, settings.payment_backoff_base_ms / 1000,
                settings.payment_backoff_max_ms / 1000),
        settings.payment_call_timeout_ms / 1000,
        observe=metrics.gateway_call,
    )
    orders = OrderService(ctx, payments, settings.idempotency_lease_seconds,
                          settings.idempotency_wait_seconds, observer=metrics)
    downstream_app, client = _downstream(settings)
    consumer = _consumer(settings, stream, client, metrics)
    expiry = ShadowExpiry(store, utc_now, settings.shadow_ttl_seconds,
                          settings.shadow_expiry_batch_size,
                          settings.shadow_expiry_interval_seconds, on_expired=metrics.expired)
    return Core(settings, db, stream, gateway, metrics, CartService(ctx), orders, relay,
                downstream_app, client, consumer, faults, expiry)


@contextlib.asynccontextmanager
async def running(
    settings: CoreSettings, gateway: FakeGateway | None = None
) -> AsyncIterator[Core]:
    """A started core without a web app (the worker, tests)."""
    core = bootstrap(settings, gateway)
    await core.start()
    try:
        yield core
    finally:
        await core.stop()
