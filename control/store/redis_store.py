"""Control store in Redis: distributed mode, shared by every proxy replica.

Every write bumps `strangler:epoch` and publishes it on `strangler:changes`, so replicas
hear of a change at once (pub/sub) and notice it on their next poll if a message is lost.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import redis

from control.store.base import (
    AuditEntry,
    KillSwitch,
    RestoreState,
    RulesVersion,
    StoreError,
    StoreIdentity,
    StoreUnavailable,
    VersionConflict,
)

log = logging.getLogger("strangler.store")

PREFIX = "strangler:"
CHANNEL = PREFIX + "changes"
K_EPOCH = PREFIX + "epoch"
K_ACTIVE = PREFIX + "rules:active"
K_COUNTER = PREFIX + "rules:counter"
K_VERSIONS = PREFIX + "rules:versions"
K_KILLS = PREFIX + "kill"
K_AUDIT = PREFIX + "audit"
K_META = PREFIX + "meta"
K_IDENTITY = PREFIX + "identity"
AUDIT_KEEP = 100_000


class RedisControlStore:
    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        self.url = url
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
        )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            raise StoreUnavailable(f"control store {self.url}: {exc}") from exc

    def _published(self, pipe: Any) -> None:
        pipe.incr(K_EPOCH)

    def _notify(self) -> None:
        """Wake the replicas. The write has landed already: a failure here only delays
        them until their next poll, so it is logged, not raised."""
        try:
            self.client.publish(CHANNEL, str(self.client.get(K_EPOCH) or 0))
        except redis.RedisError as exc:
            log.warning("change written but not published (replicas will poll): %s", exc)

    def epoch(self) -> int:
        with self._errors():
            return int(self.client.get(K_EPOCH) or 0)

    def identity(self) -> StoreIdentity | None:
        with self._errors():
            raw = self.client.get(K_IDENTITY)
        return StoreIdentity(**json.loads(raw)) if raw else None

    def initialize(self) -> StoreIdentity:
        fresh = StoreIdentity(uuid.uuid4().hex, time.time())
        with self._errors():
            self.client.set(K_IDENTITY, json.dumps(asdict(fresh)), nx=True)
        identity = self.identity()
        assert identity is not None
        return identity

    def restore(self, state: RestoreState) -> None:
        def write(pipe: Any) -> None:
            if pipe.exists(K_IDENTITY):
                raise StoreError(f"control store {self.url} has an identity: not restored")
            pipe.multi()
            self._restore(pipe, state)

        with self._errors():  # redis-py's transaction(): WATCH, run, retry on a change
            self.client.transaction(write, K_IDENTITY, K_ACTIVE, K_COUNTER)
        self._notify()

    def _restore(self, pipe: Any, state: RestoreState) -> None:
        pipe.set(K_IDENTITY, json.dumps(asdict(state.identity)))
        if state.rules is not None:
            r = state.rules
            pipe.hset(K_VERSIONS, str(r.version), json.dumps(asdict(r)))
            pipe.set(K_ACTIVE, r.version)
            pipe.set(K_COUNTER, r.version)
        for k in state.kills:  # a switch set since the loss stays as it is: kills win
            pipe.hsetnx(K_KILLS, k.scope, json.dumps(asdict(k)))
        for entry in sorted(state.audit, key=lambda e: e.at, reverse=True):
            pipe.rpush(K_AUDIT, json.dumps(asdict(entry), sort_keys=True))
        self._published(pipe)

    def durability(self) -> str | None:
        """Whether Redis keeps the control state across a restart (AOF or RDB snapshots)."""
        try:
            config = self.client.config_get("appendonly")
            config.update(self.client.config_get("save"))
        except redis.RedisError as exc:
            return f"cannot read Redis persistence settings: {exc}"
        if config.get("appendonly") == "yes" or config.get("save"):
            return None
        return ("Redis persistence is off (appendonly no, save ''): a restart loses the "
                "control state; the proxies then restore their last known state")

    def active_rules(self) -> RulesVersion | None:
        with self._errors():
            active = self.client.get(K_ACTIVE)
            return self.rules_version(int(active)) if active else None

    def rules_version(self, version: int) -> RulesVersion | None:
        with self._errors():
            raw = self.client.hget(K_VERSIONS, str(version))
        return RulesVersion(**json.loads(raw)) if raw else None

    def rules_history(self, limit: int = 50) -> list[RulesVersion]:
        with self._errors():
            top = int(self.client.get(K_COUNTER) or 0)
            wanted = [str(v) for v in range(top, max(top - limit, 0), -1)]
            raws = self.client.hmget(K_VERSIONS, wanted) if wanted else []
        return [RulesVersion(**json.loads(raw)) for raw in raws if raw]

    def apply_rules(
        self, text: str, digest: str, *, expected_version: int | None, actor: str, reason: str,
        source: str, audit: AuditEntry,
    ) -> RulesVersion:
        written: list[RulesVersion] = []  # the record of the attempt that committed

        def write(pipe: Any) -> None:
            written.clear()
            raw_active = pipe.get(K_ACTIVE)
            active = int(raw_active) if raw_active else None
            if active != expected_version:
                raise VersionConflict(expected_version, active)
            version = int(pipe.get(K_COUNTER) or 0) + 1
            record = RulesVersion(version, text, digest, audit.at, actor, reason, source)
            pipe.multi()
            pipe.set(K_COUNTER, version)
            pipe.hset(K_VERSIONS, str(version), json.dumps(asdict(record)))
            pipe.set(K_ACTIVE, version)
            self._push_audit(pipe, audit)
            self._published(pipe)
            written.append(record)

        with self._errors():
            self.client.transaction(write, K_ACTIVE, K_COUNTER)
        self._notify()
        return written[0]

    def kill_switches(self) -> dict[str, KillSwitch]:
        with self._errors():
            raw = self.client.hgetall(K_KILLS)
        return {str(scope): KillSwitch(**json.loads(value)) for scope, value in raw.items()}

    def set_kill(self, switch: KillSwitch, audit: AuditEntry) -> None:
        with self._errors():
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(K_KILLS, switch.scope, json.dumps(asdict(switch)))
            self._push_audit(pipe, audit)
            self._published(pipe)
            pipe.execute()
            self._notify()

    def clear_kill(self, scope: str, audit: AuditEntry) -> KillSwitch | None:
        cleared: list[str] = []  # the switch the committed attempt removed

        def write(pipe: Any) -> None:
            cleared.clear()
            previous = pipe.hget(K_KILLS, scope)
            if previous is None:  # clearing nothing is not an event
                return
            pipe.multi()
            pipe.hdel(K_KILLS, scope)
            self._push_audit(pipe, audit)
            self._published(pipe)
            cleared.append(previous)

        with self._errors():
            self.client.transaction(write, K_KILLS)
        if not cleared:
            return None
        self._notify()
        return KillSwitch(**json.loads(cleared[0]))

    @staticmethod
    def _push_audit(pipe: Any, entry: AuditEntry) -> None:
        pipe.lpush(K_AUDIT, json.dumps(asdict(entry), sort_keys=True))
        pipe.ltrim(K_AUDIT, 0, AUDIT_KEEP - 1)

    def record_audit(self, entry: AuditEntry) -> None:
        with self._errors():
            pipe = self.client.pipeline(transaction=True)
            self._push_audit(pipe, entry)
            self._published(pipe)
            pipe.execute()
            self._notify()

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        if limit <= 0:
            return []
        with self._errors():
            raws = self.client.lrange(K_AUDIT, 0, limit - 1)
        return [AuditEntry(**json.loads(raw)) for raw in raws]

    def get_meta(self, key: str) -> str | None:
        with self._errors():
            value = self.client.hget(K_META, key)
        return str(value) if value is not None else None

    def set_meta(self, key: str, value: str) -> None:
        with self._errors():
            self.client.hset(K_META, key, value)

    def reconnect(self) -> None:
        """Redis has no file that could be replaced under the client."""

    def close(self) -> None:
        self.client.close()
