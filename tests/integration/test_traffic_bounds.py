"""Anonymous traffic cannot starve the control state in Redis.

Before these bounds, every cookie-less request added a sticky key (kept 1 h) and a telemetry
unit (kept 7 h) to Redis, about 330 bytes a request. With `maxmemory` and `noeviction` a
flood filled Redis, and then `strangler kill` failed (exit 5) while the proxy kept routing
to the core: traffic could disable the kill switch.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest
import redis

from control import operations as control
from control.store.redis_store import RedisControlStore
from proxy.config import ProxySettings
from proxy.main import UVICORN_OPTIONS, create_app
from tests.integration.conftest import RULES
from tests.support.backends import EchoBackend
from tests.support.ci import skip_or_fail
from tests.support.processes import REPO, clean_env, strangler_cmd
from tests.support.servers import free_port, serve

pytestmark = pytest.mark.redis

IE = {"X-Checkout-Funnel": "warranties", "X-Country": "IE"}
FLOOD_REQUESTS = 30_000
# Bounds sized for an 8 MB Redis shared with the control state (the defaults, 100,000
# sticky keys and 50,000 telemetry units, need about 25 MB: docs/proxy.md, "Traffic state
# in Redis").
STICKY_MAX = 4_000
TELEMETRY_MAX = 4_000
# In `used_memory`, a sticky key costs about 190 bytes (key, value, expiry, two dict slots)
# and a telemetry unit about 150 (a sorted-set member): 4,000 of each is 1.36 MB. Add the
# counters of a minute of traffic (a few kB) and the proxy's client buffers (~0.1-0.2 MB):
# 2 MB, a quarter of this Redis. Without the bounds the flood took 6.9 MB, all there was,
# within 30,000 requests.
TRAFFIC_BYTES_MAX = 2_000_000


@contextmanager
def redis_server(*args: str) -> Iterator[str]:
    """A redis-server of this test's own on a free port (no persistence); its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        skip_or_fail("no redis-server binary")
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir, *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.RedisError:
                    assert proc.poll() is None and time.monotonic() < deadline, \
                        "redis-server did not start"
                    time.sleep(0.05)
            yield url
        finally:
            client.close()
            proc.terminate()
            proc.wait(5)


def used_memory(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def traffic_keys(url: str) -> dict[str, int]:
    """Sticky keys, and telemetry units over every unit key."""
    client = redis.Redis.from_url(url)
    try:
        sticky = sum(1 for _ in client.scan_iter("strangler:sticky:*", count=1000))
        units = sum(int(client.zcard(k)) for k in client.scan_iter("strangler:tm:u:*"))
        return {"sticky": sticky, "units": units}
    finally:
        client.close()


def fill(url: str) -> None:
    """Write junk until Redis refuses: a traffic Redis full to its maxmemory."""
    client = redis.Redis.from_url(url)
    try:
        pipe = client.pipeline(transaction=False)
        for i in range(100_000):
            pipe.set(f"junk:{i}", "x" * 200)
            if i % 500 == 499:
                try:
                    pipe.execute()
                except redis.exceptions.OutOfMemoryError:
                    return
        pytest.fail("Redis never filled up")
    finally:
        client.close()


def flood_args(url: str, requests: int) -> list[str]:
    return [sys.executable, "-m", "loadtests.flood", url, "--requests", str(requests),
            "--connections", "16", "--post-share", "0.25"]


def run_flood(url: str, requests: int) -> dict[str, Any]:
    """Cookie-less traffic from another process (loadtests/flood.py), so that the client
    does not share this process's interpreter with the proxy."""
    done = subprocess.run(flood_args(url, requests), capture_output=True, text=True,
                          timeout=150, cwd=REPO, env=clean_env(), check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    result["statuses"] = {int(status): n for status, n in result["statuses"].items()}
    return result


@contextmanager
def flood_going_on(url: str, requests: int) -> Iterator[None]:
    """The same flood in the background: the attack goes on while on-call reacts, and is
    stopped once the block has shown what it must (waiting for its end proves nothing)."""
    proc = subprocess.Popen(flood_args(url, requests), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=REPO, env=clean_env())
    try:
        time.sleep(1.0)
        assert proc.poll() is None, "the background flood ended before the kill"
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def strangler_kill(redis_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*strangler_cmd(), "kill", "--funnel", "warranties", "--reason", "flood",
         "--redis-url", redis_url, "--actor", "oncall"],
        capture_output=True, text=True, timeout=60, cwd=REPO, env=clean_env(), check=False)


def eventually(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within}s: {what}"
        time.sleep(0.05)


@contextmanager
def proxy_on(control_url: str, tmp: Any, **overrides: Any) -> Iterator[str]:
    """A proxy (real sockets, EchoBackend backends) on `control_url`, seeded with RULES."""
    store = RedisControlStore(control_url)
    control.apply_rules_text(store, RULES, source="test", actor="t", reason="seed")
    store.close()
    with ExitStack() as stack:
        core = stack.enter_context(serve(EchoBackend("core")))
        legacy = stack.enter_context(serve(EchoBackend("legacy")))
        settings = ProxySettings(
            core_url=core.url, legacy_url=legacy.url, redis_url=control_url,
            db_path=str(tmp / "unused.sqlite3"), poll_interval=0.1, **overrides)
        yield stack.enter_context(serve(create_app(settings), **UVICORN_OPTIONS)).url


def decision_of(url: str, session: str | None = None) -> str:
    headers = {**IE, "X-Checkout-Session": session} if session else IE
    r = httpx.post(url + "/carts", headers=headers, timeout=5)
    return r.headers["x-checkout-decision"]


@pytest.mark.timeout(240)
def test_a_flood_of_anonymous_traffic_cannot_disable_the_kill_switch(tmp_path):
    with redis_server("--maxmemory", "8mb", "--maxmemory-policy", "noeviction") as url, \
            proxy_on(url, tmp_path, sticky_redis_max_units=STICKY_MAX,
                     telemetry_max_units=TELEMETRY_MAX) as proxy:
        before = used_memory(url)
        customer = f"s-{uuid.uuid4().hex}"
        assert decision_of(proxy, customer).startswith("RULE;")  # a cart: in flight
        flood = run_flood(proxy, FLOOD_REQUESTS)
        assert set(flood["statuses"]) == {200, 201}, flood  # browsing, and new carts
        assert flood["requests"] == FLOOD_REQUESTS
        assert decision_of(proxy, customer).startswith("STICKY;")
        time.sleep(1.5)  # a telemetry flush (every second)
        after_flood = traffic_keys(url)

        with flood_going_on(proxy, FLOOD_REQUESTS // 2):  # the attack goes on
            killed = strangler_kill(url)
            assert killed.returncode == 0, (
                f"strangler kill exit {killed.returncode} during the flood (after it: "
                f"{after_flood}, Redis grew by {used_memory(url) - before:,} bytes): "
                f"{killed.stderr}")
            eventually(lambda: decision_of(proxy).startswith("KILL_SWITCH;"), 5,
                       "the proxy obeys the kill")
            assert decision_of(proxy, customer).startswith("KILL_SWITCH;")  # beats STICKY
        time.sleep(1.5)
        grown = used_memory(url) - before
        keys = traffic_keys(url)
    assert keys["sticky"] <= STICKY_MAX, keys
    assert keys["units"] <= TELEMETRY_MAX, keys
    assert grown < TRAFFIC_BYTES_MAX, f"traffic state took {grown:,} bytes ({keys})"


@pytest.mark.timeout(120)
def test_a_full_traffic_redis_costs_no_request_and_no_kill(tmp_path):
    with redis_server() as control_url, \
            redis_server("--maxmemory", "2mb", "--maxmemory-policy", "noeviction") as traffic:
        fill(traffic)
        with proxy_on(control_url, tmp_path, traffic_redis_url=traffic) as proxy:
            flood = run_flood(proxy, 2_000)
            assert set(flood["statuses"]) == {200, 201}, flood  # never a 5xx
            customer = f"s-{uuid.uuid4().hex}"
            assert decision_of(proxy, customer).startswith("RULE;")  # a cart: in flight
            assert decision_of(proxy, customer).startswith("STICKY;")  # kept locally
            time.sleep(1.2)  # a telemetry flush failed meanwhile
            health = httpx.get(proxy + "/_strangler/healthz", timeout=5).json()
            assert health["status"] == "ok", health  # traffic state is not control state

            killed = strangler_kill(control_url)
            assert killed.returncode == 0, killed.stderr
            eventually(lambda: decision_of(proxy).startswith("KILL_SWITCH;"), 5,
                       "the proxy obeys the kill")
            assert decision_of(proxy, customer).startswith("KILL_SWITCH;")
        assert traffic_keys(control_url) == {"sticky": 0, "units": 0}
