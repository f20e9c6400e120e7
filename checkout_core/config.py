"""The core's settings: one frozen object built at start-up (env prefix `CHECKOUT_CORE_`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from checkout_core.domain.catalog import COUNTRIES
from checkout_core.domain.pricing import DriftKind, PricingDrift

Millis = Annotated[int, Field(ge=0, le=60_000)]
"""A duration in milliseconds, at most one minute."""

Rate = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
"""A probability in [0, 1]."""


def _known_country(code: str) -> str:
    known = [country.code for country in COUNTRIES]
    if code not in known:
        raise ValueError(f"unknown country {code!r}; one of {', '.join(known)}")
    return code


class PricingDriftSetting(BaseModel):
    """A pricing drift of a fault drill: `{"country": "DE", "kind": "tax_round_down"}`."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    country: Annotated[str, AfterValidator(_known_country)]
    kind: DriftKind

    def to_drift(self) -> PricingDrift:
        return PricingDrift(self.country, self.kind)


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
    idempotency_wait_seconds: float = Field(5.0, ge=0)
    """How long a concurrent duplicate waits for the first request before a 409 with
    Retry-After. Keep it under the proxy's read timeout for the core (10 s): a duplicate held
    longer would reach its client as the proxy's 504, not as the retryable 409."""

    run_relay: bool = True
    run_consumer: bool = True
    relay_batch_size: int = Field(100, ge=1)
    relay_poll_ms: int = Field(200, gt=0)

    downstream_url: str | None = None
    """The order system. Unset: a fake mounted at /_downstream inside the core app."""
    downstream_timeout_ms: int = Field(2000, gt=0)
    downstream_fake_failure_rate: float = Field(0.0, ge=0, le=1)
    otel: bool = False
    """OpenTelemetry server spans (the `[otel]` extra), continuing the proxy's traceparent;
    exported as the standard OTEL_* variables say (docs/deploy.md, Tracing)."""
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
    fault_pricing_drift: PricingDriftSetting | None = None
    """A pricing drift in force from start-up, as JSON: `{"country": "DE", "kind":
    "tax_round_down"}` (docs/checkout_core.md, "Fault drills")."""

    shadow_ttl_seconds: int = Field(7200, gt=0)
    """Shadow carts (and their checkouts) are deleted this long after they were created. Keep
    it above the proxy's shadow id map TTL (3600 s), which forgets them first."""
    shadow_expiry_interval_seconds: float = Field(60.0, gt=0)
    shadow_expiry_batch_size: int = Field(500, ge=1)
    """Shadow carts deleted per transaction."""
    run_shadow_expiry: bool = True

    @model_validator(mode="before")
    @classmethod
    def _ledger_next_to_the_database(cls, data: Any) -> Any:
        if isinstance(data, dict) and "gateway_ledger_path" not in data:
            db_path = Path(data.get("db_path") or cls.model_fields["db_path"].default)
            ledger = db_path.with_name(f"{db_path.stem}.gateway.sqlite3")
            data = {**data, "gateway_ledger_path": ledger}
        return data
