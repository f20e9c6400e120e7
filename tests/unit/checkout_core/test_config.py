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
