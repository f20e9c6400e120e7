"""Proxy settings: one frozen object, from STRANGLER_* environment variables or arguments."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _access_log_rate(value: object) -> object:
    """`off` (0), `on` (1), or the share of requests logged, as a number."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("off", "false", "no", "0", ""):
            return 0.0
        if word in ("on", "true", "yes", "1"):
            return 1.0
    return value


AccessLogRate = Annotated[float, BeforeValidator(_access_log_rate), Field(ge=0, le=1)]


class ProxySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STRANGLER_", frozen=True, extra="ignore")

    core_url: str = "http://127.0.0.1:8081"
    legacy_url: str = "http://127.0.0.1:8082"
    rules_file: str | None = Field(None, description="rules YAML to import and watch")
    db_path: str = Field("var/strangler.sqlite3", description="embedded control store")
    redis_url: str | None = Field(None, description="distributed mode: shared state in Redis")
    traffic_redis_url: str | None = Field(
        None, description="Redis for the state traffic writes (sticky assignments, "
        "telemetry), apart from the control state; default: redis_url")
    state_cache: str | None = Field(
        None, description="file keeping this replica's last known control state (rules, kill "
        "switches, audit) across restarts, for a store that lost its data; default "
        "last-known-state.json beside db_path; '' turns it off")

    core_connect_timeout: float = 1.0
    core_read_timeout: float = 10.0
    legacy_connect_timeout: float = 2.0
    legacy_read_timeout: float = 30.0
    pool_size: int = Field(256, ge=1, description="keep-alive connections per backend")
    max_body_bytes: int = Field(1_048_576, ge=1024)

    poll_interval: float = Field(0.1, gt=0, le=5.0, description="store and file polling (s)")
    sticky_max_units: int = Field(200_000, ge=1000)
    sticky_redis_max_units: int = Field(
        100_000, ge=1000, description="sticky assignments Redis holds at most, whatever "
        "the traffic (proxy.sticky_redis); above, a new one stays on its replica")
    trusted_proxies: list[str] = Field(default_factory=list, description="CIDRs or IPs")
    via_name: str = "strangler"
    forward_path_prefixes: list[str] = Field(
        default_factory=lambda: ["/carts", "/checkouts", "/orders", "/healthz", "/openapi.yaml"],
        description="paths forwarded to the backends (after a funnel prefix is stripped); "
        "others get 404, so backend ops endpoints stay private; [] forwards everything",
    )

    telemetry_bucket_seconds: int = Field(10, ge=1, le=300)
    malloc_tuning: bool = Field(
        True, description="fixed glibc mmap threshold and 2 arenas, so RSS follows the live "
        "data instead of its peaks (proxy.runtime.tune_malloc)")
    telemetry_max_units: int = Field(
        50_000, ge=1000, description="distinct units the telemetry keeps (in process, or "
        "in Redis for all replicas); above it, a uniform hash sample of them (the same "
        "units in both arms)")
    guard_interval: float = Field(5.0, gt=0, description="seconds between guardrail checks")
    guard_webhook_url: str | None = Field(None, description="POSTed the evidence of a trip")
    session_cookie_max_age: int = 86_400
    shadow_queue: int = Field(
        1_000, ge=1, description="mirrored requests (shadow parity) queued on this replica "
        "at most; above, new ones are dropped and counted (docs/shadow.md)")
    shadow_concurrency: int = Field(4, ge=1, le=256, description="units mirrored at once")
    shadow_max_busy: float = Field(
        0.75, gt=0, le=1, description="customers first: mirrored requests wait while the "
        "proxy's event loop was on the CPU more than this share of the time (customers and "
        "replays together); a saturated replica replays nothing and drops (docs/shadow.md)")
    shadow_timeout: float = Field(5.0, gt=0, description="seconds a mirrored request may "
                                  "take at the core before it counts as an error")
    shadow_id_ttl: float = Field(3600.0, gt=0, description="seconds a unit's legacy id -> "
                                 "core id map is kept after its last new id")
    otel: bool = Field(
        False, description="OpenTelemetry tracing (the [otel] extra), exported over OTLP "
        "HTTP as the standard OTEL_* variables say (docs/deploy.md, Tracing); off: nothing of "
        "opentelemetry is loaded")

    # reliability and security (docs/reliability.md)
    max_header_bytes: int = Field(32_768, ge=1024, description="request head limit; above: 431")
    header_timeout: float = Field(10.0, gt=0, description="seconds to read a request head")
    body_idle_timeout: float = Field(10.0, gt=0, description="max gap between body chunks (s)")
    body_timeout: float = Field(60.0, gt=0, description="seconds to read a whole request body")
    body_buffer_bytes: int = Field(
        1_048_576, ge=0, description="request bodies up to this size are read whole before "
        "an upstream connection is taken (a slow client holds none); larger ones stream")
    body_buffer_total_bytes: int = Field(
        64 * 1_048_576, ge=0, description="request bodies read ahead by this process at "
        "once, at most (bytes): beyond it a body streams like one over body_buffer_bytes, "
        "so that many slow uploads cannot take the memory (docs/reliability.md)")
    trust_country_headers: Literal["trusted-proxies", "always"] = Field(
        "trusted-proxies", description="whose country headers (the rules' country_headers) "
        "are believed: peers in trusted_proxies only, or always (behind a CDN that sets them)")
    max_state_age: float = Field(
        30.0, ge=0, description="control state older than this (s): all to legacy; 0: off")
    qa_override_secret: str | None = Field(
        None, description="enables X-Checkout-Force with X-Checkout-Force-Token")
    admin_port: int | None = Field(None, ge=1, le=65535, description="serve admin paths here only")
    admin_token: str | None = Field(None, description="Bearer token required by admin paths")

    access_log: AccessLogRate = Field(
        0.0, description="one log line per proxied request (logger strangler.access): off "
        "(the default), on, or the share of requests logged, such as 0.01")
