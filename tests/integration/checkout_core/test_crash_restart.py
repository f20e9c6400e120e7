"""Crash and restart: real processes killed with SIGKILL mid-batch, then restarted. Every
placed order must reach the fake downstream exactly once (it records idempotency keys and
counts deliveries), and nothing may be left in the outbox or pending in the stream."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from checkout_core import downstream_fake
from checkout_core.adapters.sqlite_db import SqliteDatabase
from checkout_core.bootstrap import bootstrap
from checkout_core.config import CoreSettings
from tests.support.servers import free_port, serve

from .conftest import SettingsFactory
from .helpers import http_checkout, open_checkout, payment_body, place, wait_until

ORDERS = 8
STALL_ON = 3


def worker_env(db_path: Path, downstream_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHECKOUT_CORE_")}
    env.update({
        "CHECKOUT_CORE_DB_PATH": str(db_path),
        "CHECKOUT_CORE_DOWNSTREAM_URL": downstream_url,
        "CHECKOUT_CORE_DOWNSTREAM_TIMEOUT_MS": "30000",
        "CHECKOUT_CORE_CONSUMER_CLAIM_IDLE_MS": "300",
        "CHECKOUT_CORE_CONSUMER_BLOCK_MS": "50",
        "CHECKOUT_CORE_RELAY_POLL_MS": "50",
        "CHECKOUT_CORE_GATEWAY_LATENCY_MS": "0",
        **extra,
    })
    return env


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, *args], env=env, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(5)


async def _place_orders(settings: CoreSettings, count: int) -> list[str]:
    core = bootstrap(settings)
    try:
        ids = []
        for i in range(count):
            checkout = await open_checkout(core)
            ids.append((await place(core, checkout.id, f"key-{i}")).id)
        return ids
    finally:
        await core.stop()


def unpublished(db_path: Path) -> int:
    return int(SqliteDatabase(db_path).transaction(lambda conn: conn.execute(
        "SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()[0], write=False))


def settled(db_path: Path) -> bool:
    """Outbox published and no order-sync message pending or unread (embedded stream)."""
    def backlog(conn: sqlite3.Connection) -> int:
        pending = conn.execute("SELECT count(*) FROM stream_pending").fetchone()[0]
        unread = conn.execute(
            "SELECT count(*) FROM stream_messages WHERE seq >"
            " coalesce((SELECT last_seq FROM stream_groups WHERE name = 'order-sync'), 0)"
        ).fetchone()[0]
        return int(pending) + int(unread)

    db = SqliteDatabase(db_path)
    return unpublished(db_path) == 0 and db.transaction(backlog, write=False) == 0


def assert_exactly_once(state: downstream_fake.DownstreamState, order_ids: list[str]) -> None:
    received = state.snapshot()
    by_order = [r.order["order_id"] for r in received.values()]
    assert sorted(by_order) == sorted(order_ids)  # each order recorded once, none missing
    assert all(key == f"order.placed:{r.order['order_id']}" for key, r in received.items())
    deliveries = sorted(r.deliveries for r in received.values())
    assert deliveries == [1] * (len(order_ids) - 1) + [2]  # the one in flight came again


def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing(
    make_settings: SettingsFactory, db_path: Path, tmp_path: Path,
) -> None:
    order_ids = asyncio.run(_place_orders(make_settings(), ORDERS))
    state = downstream_fake.DownstreamState(stall_on_delivery=STALL_ON)
    with serve(downstream_fake.create_app(state)) as downstream:
        env = worker_env(db_path, downstream.url)
        args = ["-m", "checkout_core.worker"]
        with process(args, env, tmp_path / "worker.log") as first:
            wait_until(lambda: state.requests >= STALL_ON, 15, message="the stalled delivery")
            sigkill(first)
        state.release()
        assert len(state.snapshot()) == STALL_ON
        with process(args, env, tmp_path / "worker.log") as second:
            wait_until(lambda: len(state.snapshot()) == ORDERS and settled(db_path), 15,
                       message="every order delivered")
            assert second.poll() is None
    assert_exactly_once(state, order_ids)


def test_the_core_killed_mid_flight_loses_nothing_and_duplicates_nothing(
    db_path: Path, tmp_path: Path,
) -> None:
    state = downstream_fake.DownstreamState(stall_on_delivery=STALL_ON)
    with serve(downstream_fake.create_app(state)) as downstream:
        env = worker_env(db_path, downstream.url)
        port = free_port()
        args = ["-m", "checkout_core", "--port", str(port)]
        url = f"http://127.0.0.1:{port}"
        with process(args, env, tmp_path / "core.log") as first, \
                httpx.Client(base_url=url) as client:
            wait_until(lambda: _healthy(client), 15, message="the core to start")
            order_ids = []
            for i in range(ORDERS):
                response = client.post(f"/checkouts/{http_checkout(client)}/orders",
                                       json=payment_body(), headers={"Idempotency-Key": f"k{i}"})
                assert response.status_code == 201, response.text
                order_ids.append(response.json()["id"])
            wait_until(lambda: state.requests >= STALL_ON, 15, message="the stalled delivery")
            sigkill(first)
        state.release()
        with process(args, env, tmp_path / "core.log"), httpx.Client(base_url=url) as client:
            wait_until(lambda: _healthy(client), 15, message="the core to restart")
            wait_until(lambda: len(state.snapshot()) == ORDERS and settled(db_path), 15,
                       message="every order delivered")
            assert client.get(f"/orders/{order_ids[0]}").status_code == 200
    assert_exactly_once(state, order_ids)


def _healthy(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CHECKOUT_CORE_"):
            monkeypatch.delenv(key)
