from __future__ import annotations

from datetime import UTC, datetime

import pytest

from checkout_core.domain import events as ev

NOW = datetime(2026, 11, 22, 3, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("type_", "key"),
    [
        (ev.ORDER_PLACED, "order.placed:co_ord_1"),
        (ev.CHECKOUT_STARTED, "checkout.started:co_ord_1"),
        (ev.CART_ITEM_ADDED, "cart.item_added:co_evt_1"),
        (ev.CART_ITEM_REMOVED, "cart.item_removed:co_evt_1"),
        (ev.PAYMENT_FAILED, "payment.failed:co_evt_1"),
    ],
)
def test_idempotency_keys_are_per_aggregate_for_once_only_events(type_: str, key: str) -> None:
    assert ev.new_event("co_evt_1", type_, "co_ord_1", NOW, {}).idempotency_key == key


def test_envelope_carries_id_version_time_and_key_and_round_trips() -> None:
    event = ev.new_event("co_evt_1", ev.ORDER_PLACED, "co_ord_1", NOW, {"total": 5})
    envelope = ev.to_envelope(event)
    assert envelope == {
        "id": "co_evt_1", "type": "order.placed", "schema_version": 1,
        "occurred_at": "2026-11-22T03:00:00Z", "idempotency_key": "order.placed:co_ord_1",
        "aggregate_id": "co_ord_1", "data": {"total": 5},
    }
    assert ev.decode(ev.encode(event)) == event
