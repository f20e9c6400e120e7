from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
import redis

from tests.support.redis_server import redis_url

_db_counter = itertools.count(1)


def _next_db() -> int:
    """The next logical database of this test process, 1 to 15. Under pytest-xdist two
    workers may share one REDIS_URL: each gets its own databases (gw0 odd, gw1 even, ...),
    so one worker's flush never empties another's test. Without REDIS_URL each worker
    starts a redis-server of its own anyway."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker.removeprefix("gw") or 0)
    mine = [db for db in range(1, 16) if (db - 1) % max(1, min(workers, 15)) == index % 15]
    return mine[next(_db_counter) % len(mine)]


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    with redis_url() as url:
        yield url


@pytest.fixture
def redis_clean_url(redis_server_url: str) -> Iterator[str]:
    """A Redis URL whose key space (a key prefix namespace) is fresh for this test.

    Tests get their own logical database on the server and it is flushed before use.
    """
    base = redis_server_url.rsplit("/", 1)[0]
    url = f"{base}/{_next_db()}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    yield url
