"""A real Redis for tests: REDIS_URL, else a redis-server started on a free port.

Only when neither exists may a test skip, and under CI it fails instead
(`tests.support.ci.skip_or_fail`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from tests.support.ci import skip_or_fail
from tests.support.servers import free_port


def _ping(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


@contextmanager
def own_redis_server(port: int | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own, on `port` (a `PortReservation`'s, say) or a free
    port: (url, process)."""
    binary = shutil.which("redis-server")
    if binary is None:
        skip_or_fail("no redis-server binary")
    port = port or free_port()
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            deadline = time.monotonic() + 10
            while not _ping(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("redis-server did not start")
                time.sleep(0.05)
            yield url, proc
        finally:
            proc.terminate()
            proc.wait(5)


@contextmanager
def redis_url() -> Iterator[str]:
    """Yield the URL of a reachable Redis server."""
    url = os.environ.get("REDIS_URL")
    if url:
        if not _ping(url):
            skip_or_fail(f"REDIS_URL={url} does not answer")
        yield url
        return
    with own_redis_server() as (own_url, _):
        yield own_url
