"""The monitor lease: one guardrail monitor among the proxy replicas at a time.

Embedded mode has one process, always the monitor; with Redis a lease key, renewed every
tick, elects one replica, so a trip is decided once.
"""

from __future__ import annotations

import logging

log = logging.getLogger("strangler.guardrails")


class LocalLease:
    """Embedded mode: one process, always the monitor."""

    def hold(self) -> bool:
        return True

    def close(self) -> None:
        pass


class RedisLease:
    """One monitor among the replicas: a lease in Redis, renewed every tick."""

    KEY = "strangler:monitor:lease"

    def __init__(self, url: str, owner: str, ttl_seconds: float) -> None:
        import redis

        self._redis = redis
        self.client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1,
                                           decode_responses=True)
        self.owner = owner
        self.ttl_ms = int(ttl_seconds * 1000)

    def hold(self) -> bool:
        try:
            if self.client.set(self.KEY, self.owner, nx=True, px=self.ttl_ms):
                return True
            if self.client.get(self.KEY) == self.owner:
                self.client.pexpire(self.KEY, self.ttl_ms)
                return True
        except self._redis.RedisError as exc:
            log.warning("monitor lease unavailable: %s", exc)
        return False

    def close(self) -> None:
        self.client.close()
