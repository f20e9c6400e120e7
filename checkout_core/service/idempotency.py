"""Idempotency keys for placing orders: fingerprints, key syntax, and what a claim decides."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from checkout_core.domain.errors import IdempotencyKeyReuse
from checkout_core.service.ports import IdempotencyRecord, Outcome

KEY_SYNTAX = re.compile(r"[\x20-\x7e]{1,255}")


def valid_key(key: str) -> bool:
    """1..255 printable ASCII characters."""
    return KEY_SYNTAX.fullmatch(key) is not None


def fingerprint(checkout_id: str, body: Mapping[str, Any]) -> str:
    """A digest of the request: the same checkout and the same (canonical) JSON body."""
    canonical = json.dumps(
        {"checkout_id": checkout_id, "body": body}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Replay:
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Busy:
    """The first request with this key is still running; wait and look again."""


@dataclass(frozen=True, slots=True)
class TakeOver:
    """The first request's lease ran out (it crashed or gave up); this request continues it."""


def decide(
    record: IdempotencyRecord, request_fingerprint: str, now: datetime
) -> Replay | Busy | TakeOver:
    """What a request does with a key someone already claimed."""
    if record.fingerprint != request_fingerprint:
        raise IdempotencyKeyReuse(
            "this Idempotency-Key was used with a different request; use a new key"
        )
    if record.outcome is not None:
        return Replay(record.outcome)
    if record.lease_until > now:
        return Busy()
    return TakeOver()
