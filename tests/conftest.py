from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import redis

from tests.support.redis_server import redis_url

_db_counter = itertools.count(1)


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
    db = 1 + next(_db_counter) % 15
    url = f"{base}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    yield url
