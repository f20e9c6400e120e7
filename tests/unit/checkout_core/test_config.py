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
