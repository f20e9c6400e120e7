from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from checkout_core.adapters.fake_gateway import FakeGateway
from checkout_core.bootstrap import Core, bootstrap
from checkout_core.config import CoreSettings

SettingsFactory = Callable[..., CoreSettings]

FAST = {
    "gateway_latency_ms": 0,
    "gateway_timeout_ms": 0,
    "payment_backoff_base_ms": 1,
    "payment_backoff_max_ms": 5,
    "consumer_backoff_base_ms": 1,
    "consumer_backoff_max_ms": 5,
    "consumer_block_ms": 20,
    "relay_poll_ms": 20,
    "consumer_claim_idle_ms": 100,
    "consumer_name": "test-consumer",
}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "core.sqlite3"


@pytest.fixture
def make_settings(db_path: Path) -> SettingsFactory:
    """Settings for a fast core on a fresh SQLite file; keyword arguments override."""

    def make(**overrides: Any) -> CoreSettings:
        return CoreSettings(**{"db_path": db_path, **FAST, **overrides})

    return make


@pytest.fixture
async def make_core(make_settings: SettingsFactory) -> AsyncIterator[Callable[..., Core]]:
    """A wired core whose background tasks do not run: tests drive the relay and consumer."""
    cores: list[Core] = []

    def make(gateway: FakeGateway | None = None, **overrides: Any) -> Core:
        core = bootstrap(make_settings(**overrides), gateway)
        cores.append(core)
        return core

    yield make
    for core in cores:
        await core.stop()
