from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from checkout_core.config import CoreSettings


def test_defaults_are_the_embedded_mode() -> None:
    settings = CoreSettings()
    assert settings.db_path == Path("var/checkout_core.sqlite3")
    assert settings.redis_url is None
    assert settings.downstream_url is None


def test_reads_the_environment_with_its_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHECKOUT_CORE_DB_PATH", "/tmp/x.sqlite3")
    monkeypatch.setenv("CHECKOUT_CORE_GATEWAY_DECLINE_RATE", "0.25")
    monkeypatch.setenv("CHECKOUT_CORE_REDIS_URL", "redis://localhost:6379/0")
    settings = CoreSettings()
    assert settings.db_path == Path("/tmp/x.sqlite3")
    assert settings.gateway_decline_rate == 0.25
    assert settings.redis_url == "redis://localhost:6379/0"


def test_settings_are_frozen() -> None:
    settings = CoreSettings()
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize("field", ["gateway_decline_rate", "gateway_timeout_rate"])
def test_rates_are_probabilities(field: str) -> None:
    with pytest.raises(ValidationError):
        CoreSettings(**{field: 1.5})  # type: ignore[arg-type]


def test_the_gateway_ledger_is_a_file_next_to_the_database() -> None:
    assert CoreSettings().gateway_ledger_path == Path("var/checkout_core.gateway.sqlite3")
    settings = CoreSettings(db_path=Path("/data/core.sqlite3"))
    assert settings.gateway_ledger_path == Path("/data/core.gateway.sqlite3")


def test_the_gateway_ledger_follows_the_database_path_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHECKOUT_CORE_DB_PATH", "/tmp/x.sqlite3")
    assert CoreSettings().gateway_ledger_path == Path("/tmp/x.gateway.sqlite3")
    monkeypatch.setenv("CHECKOUT_CORE_GATEWAY_LEDGER_PATH", "/tmp/ledger.sqlite3")
    assert CoreSettings().gateway_ledger_path == Path("/tmp/ledger.sqlite3")


@pytest.mark.parametrize("value", [None, ":memory:"])
def test_the_gateway_ledger_can_stay_in_memory(value: str | None) -> None:
    from checkout_core.adapters.fake_gateway import MemoryLedger
    from checkout_core.bootstrap import build_gateway

    gateway = build_gateway(CoreSettings(gateway_ledger_path=value))
    assert isinstance(gateway.ledger, MemoryLedger)


def test_shadow_resources_expire_after_the_proxys_id_map_forgot_them() -> None:
    settings = CoreSettings()
    assert settings.shadow_ttl_seconds == 7200  # the proxy's id map forgets after 3600 s
    assert settings.run_shadow_expiry is True
    assert (settings.shadow_expiry_interval_seconds, settings.shadow_expiry_batch_size) == \
        (60.0, 500)


def test_the_shadow_expiry_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHECKOUT_CORE_SHADOW_TTL_SECONDS", "600")
    monkeypatch.setenv("CHECKOUT_CORE_SHADOW_EXPIRY_BATCH_SIZE", "10")
    monkeypatch.setenv("CHECKOUT_CORE_RUN_SHADOW_EXPIRY", "false")
    settings = CoreSettings()
    assert (settings.shadow_ttl_seconds, settings.shadow_expiry_batch_size) == (600, 10)
    assert settings.run_shadow_expiry is False


@pytest.mark.parametrize(("field", "value"), [
    ("shadow_ttl_seconds", 0), ("shadow_expiry_batch_size", 0),
    ("shadow_expiry_interval_seconds", 0),
])
def test_the_shadow_expiry_settings_are_positive(field: str, value: int) -> None:
    with pytest.raises(ValidationError):
        CoreSettings(**{field: value})  # type: ignore[arg-type]
