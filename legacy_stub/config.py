"""Settings of the legacy stub, read once at start-up from `LEGACY_STUB_*` variables."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Millis = Annotated[int, Field(ge=0, le=60_000)]
"""A duration in milliseconds, at most one minute."""

Rate = Annotated[float, Field(ge=0.0, le=1.0)]
"""A probability in [0, 1]."""


class LegacySettings(BaseSettings):
    """How slow and how faulty the stand-in monolith is, and where it listens.

    `latency_ms` is the least delay added to every contract request; up to
    `latency_jitter_ms` more is added at random. `error_rate` is the fraction of contract
    requests answered with an injected 500, `decline_rate` the fraction of otherwise
    approved payments declined. `seed` makes the random draws reproducible.
    """

    model_config = SettingsConfigDict(env_prefix="LEGACY_STUB_", frozen=True, extra="ignore")

    latency_ms: Millis = 250
    latency_jitter_ms: Millis = 100
    error_rate: Rate = 0.0
    decline_rate: Rate = 0.02
    seed: int | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8082, ge=0, le=65_535)
    otel: bool = False
    """OpenTelemetry server spans (the `[otel]` extra), continuing the proxy's traceparent;
    exported as the standard OTEL_* variables say (docs/deploy.md, Tracing)."""
