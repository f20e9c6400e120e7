"""Domain events: what happened, stamped so that any consumer can process it idempotently.

Every event carries an id, a schema version, `occurred_at` and an idempotency key. Events that
happen once per aggregate (`order.placed`) derive the key from the aggregate, so that no
duplicate can slip past a consumer even if it were emitted twice; the others use the event id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SCHEMA_VERSION = 1

CART_CREATED = "cart.created"
CART_ITEM_ADDED = "cart.item_added"
CART_ITEM_QUANTITY_CHANGED = "cart.item_quantity_changed"
CART_ITEM_REMOVED = "cart.item_removed"
CHECKOUT_STARTED = "checkout.started"
ORDER_PLACED = "order.placed"
PAYMENT_AUTHORIZED = "payment.authorized"
PAYMENT_FAILED = "payment.failed"
PAYMENT_ORPHANED = "payment.orphaned"

ONCE_PER_AGGREGATE = frozenset({CART_CREATED, CHECKOUT_STARTED, ORDER_PLACED, PAYMENT_AUTHORIZED})


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    aggregate_id: str
    occurred_at: datetime
    idempotency_key: str
    data: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION


def new_event(
    event_id: str, type_: str, aggregate_id: str, occurred_at: datetime, data: Mapping[str, Any]
) -> Event:
    key = f"{type_}:{aggregate_id}" if type_ in ONCE_PER_AGGREGATE else f"{type_}:{event_id}"
    return Event(event_id, type_, aggregate_id, occurred_at, key, dict(data))


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, to the second: `2026-11-22T03:00:00Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def to_envelope(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "schema_version": event.schema_version,
        "occurred_at": format_time(event.occurred_at),
        "idempotency_key": event.idempotency_key,
        "aggregate_id": event.aggregate_id,
        "data": dict(event.data),
    }


def from_envelope(envelope: Mapping[str, Any]) -> Event:
    return Event(
        id=str(envelope["id"]),
        type=str(envelope["type"]),
        aggregate_id=str(envelope["aggregate_id"]),
        occurred_at=parse_time(str(envelope["occurred_at"])),
        idempotency_key=str(envelope["idempotency_key"]),
        data=dict(envelope.get("data") or {}),
        schema_version=int(envelope["schema_version"]),
    )


def encode(event: Event) -> str:
    return json.dumps(to_envelope(event), separators=(",", ":"), sort_keys=True)


def decode(text: str) -> Event:
    return from_envelope(json.loads(text))
