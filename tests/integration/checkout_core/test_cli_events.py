"""`strangler events` (cli/events.py): listing and replaying dead letters."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from checkout_core.adapters.redis_stream import RedisEventStream
from checkout_core.adapters.sqlite_db import SqliteDatabase
from checkout_core.adapters.sqlite_stream import SqliteEventStream
from checkout_core.domain import events as ev
from checkout_core.ids import utc_now
from checkout_core.messaging.stream import EventStream
from cli.events import app

runner = CliRunner()


async def park(stream: EventStream, count: int) -> None:
    await stream.ensure_group("order-sync")
    await stream.publish([
        ev.new_event(f"co_evt_{i}", ev.ORDER_PLACED, f"co_ord_{i}", utc_now(), {})
        for i in range(count)
    ])
    for message in await stream.read("order-sync", "c", 10, 0.01):
        await stream.park("order-sync", message, "downstream failed: HTTP 503", 5)
    await stream.close()


def sqlite_stream(db_path: Path) -> SqliteEventStream:
    db = SqliteDatabase(db_path)
    db.initialize()
    return SqliteEventStream(db)


def listed(*args: str, env: dict[str, str] | None = None) -> list[dict[str, object]]:
    result = runner.invoke(app, ["dlq", "list", "--json", *args], env=env)
    assert result.exit_code == 0, result.output
    rows: list[dict[str, object]] = json.loads(result.output)
    return rows


def test_list_and_replay_in_embedded_mode(db_path: Path) -> None:
    asyncio.run(park(sqlite_stream(db_path), 3))
    rows = listed("--db-path", str(db_path))
    assert [(r["type"], r["idempotency_key"], r["attempts"]) for r in rows] == [
        ("order.placed", f"order.placed:co_ord_{i}", 5) for i in range(3)]
    table = runner.invoke(app, ["dlq", "list", "--db-path", str(db_path)])
    assert table.exit_code == 0 and "3 dead letter(s)" in table.output
    result = runner.invoke(app, ["replay", "--id", str(rows[0]["id"]), "--db-path", str(db_path)])
    assert result.exit_code == 0 and "Replayed 1 dead letter(s)." in result.output
    assert len(listed(env={"CHECKOUT_CORE_DB_PATH": str(db_path)})) == 2
    result = runner.invoke(app, ["replay", "--all"], env={"CHECKOUT_CORE_DB_PATH": str(db_path)})
    assert result.exit_code == 0 and "Replayed 2" in result.output
    assert listed("--db-path", str(db_path)) == []


@pytest.mark.parametrize(
    "args",
    [["replay"], ["replay", "--all", "--id", "x"], ["replay", "--id", "co_dlq_unknown"]],
)
def test_replay_needs_exactly_one_known_choice(db_path: Path, args: list[str]) -> None:
    asyncio.run(park(sqlite_stream(db_path), 1))
    result = runner.invoke(app, [*args, "--db-path", str(db_path)])
    assert result.exit_code == 1
    assert len(listed("--db-path", str(db_path))) == 1


@pytest.mark.redis
def test_list_and_replay_with_redis(redis_clean_url: str, db_path: Path) -> None:
    asyncio.run(park(RedisEventStream.from_url(redis_clean_url, "checkout_core", 60), 2))
    env = {"STRANGLER_REDIS_URL": redis_clean_url}
    rows = listed("--db-path", str(db_path), env=env)
    assert len(rows) == 2
    result = runner.invoke(app, ["replay", "--all", "--redis-url", redis_clean_url])
    assert result.exit_code == 0 and "Replayed 2" in result.output
    assert listed(env=env) == []
