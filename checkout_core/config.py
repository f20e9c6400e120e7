"""The core's settings: one frozen object built at start-up (env prefix `CHECKOUT_CORE_`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Millis = Annotated[int, Field(ge=0, le=60_000)]
"""A duration in milliseconds, at most one minute."""

Rate = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
"""A probability in [0, 1]."""


class CoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHECKOUT_CORE_", frozen=True, extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8081, ge=0, le=65535)
    db_path: Path = Path("var/checkout_core.sqlite3")
    db_busy_timeout_ms: int = Field(5000, ge=0)
    db_synchronous: Literal["NORMAL", "FULL"] = "FULL"
    """FULL: every commit is fsynced, so an acknowledged order survives a power loss."""
    redis_url: str | None = None
    """Set: distributed mode (events through Redis Streams). Unset: embedded (all in SQLite)."""
    redis_prefix: str = "checkout_core"

    gateway_latency_ms: int = Field(30, ge=0)
    gateway_decline_rate: float = Field(0.0, ge=0, le=1)
    gateway_timeout_rate: float = Field(0.0, ge=0, le=1)
    gateway_unknown_rate: float = Field(0.0, ge=0, le=1)
    """Share of charges that succeed at the gateway but time out for the core."""
    gateway_timeout_ms: int = Field(200, ge=0)
    """How long a simulated gateway timeout keeps the core waiting."""
    gateway_seed: int | None = None
    gateway_ledger_path: Path | None = None
    """The fake gateway's ledger, a SQLite file of its own (the provider's, not the core's).
    Unset: next to `db_path` (`<stem>.gateway.sqlite3`). None or ":memory:": in this process
    only, so a restarted core cannot reconcile what it charged before."""
    payment_call_timeout_ms: int = Field(2000, gt=0)
    payment_max_attempts: int = Field(4, ge=1, le=10)
    payment_backoff_base_ms: int = Field(50, ge=0)
    payment_backoff_max_ms: int = Field(1000, ge=0)

    idempotency_lease_seconds: float = Field(30.0, gt=0)
    """How long a running request owns its key and its checkout; must outlast a charge."""
    idempotency_wait_seconds: float = Field(20.0, ge=0)
    """How long a concurrent duplicate waits for the first request before a 409."""

    run_relay: bool = True
    run_consumer: bool = True
    relay_batch_size: int = Field(100, ge=1)
    relay_poll_ms: int = Field(200, gt=0)

    downstream_url: str | None = None
    """The order system. Unset: a fake mounted at /_downstream inside the core app."""
    downstream_timeout_ms: int = Field(2000, gt=0)
    downstream_fake_failure_rate: float = Field(0.0, ge=0, le=1)
    consumer_group: str = "order-sync"
    consumer_name: str | None = None
    """Unset: host name and process id."""
    consumer_batch_size: int = Field(32, ge=1)
    consumer_block_ms: int = Field(200, gt=0)
    consumer_max_attempts: int = Field(5, ge=1)
    """Delivery attempts (with backoff) before a message is parked in the dead-letter store."""
    consumer_backoff_base_ms: int = Field(100, ge=0)
    consumer_backoff_max_ms: int = Field(2000, ge=0)
    consumer_max_deliveries: int = Field(5, ge=1)
    """Stream deliveries (crashed consumers) after which a message is parked unprocessed."""
    consumer_claim_idle_ms: int = Field(30000, ge=0)
    """A message pending this long at another consumer is presumed orphaned and claimed."""
    processed_ttl_seconds: int = Field(14 * 24 * 3600, gt=0)
    """How long Redis remembers processed idempotency keys (SQLite keeps them)."""

    fault_latency_ms: Millis = 0
    """Fault drills: the least delay added to every contract request (`/_faults` changes
    these at runtime); up to `fault_latency_jitter_ms` more is added at random."""
    fault_latency_jitter_ms: Millis = 0
    fault_error_rate: Rate = 0.0
    """Share of contract requests answered with an injected 500. The decline rate of a fault
    drill is the gateway's own, `gateway_decline_rate`."""
    fault_seed: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _ledger_next_to_the_database(cls, data: Any) -> Any:
        if isinstance(data, dict) and "gateway_ledger_path" not in data:
            db_path = Path(data.get("db_path") or cls.model_fields["db_path"].default)
            ledger = db_path.with_name(f"{db_path.stem}.gateway.sqlite3")
            data = {**data, "gateway_ledger_path": ledger}
        return data
