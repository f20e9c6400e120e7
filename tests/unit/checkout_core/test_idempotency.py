from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from checkout_core.domain.errors import IdempotencyKeyReuse
from checkout_core.service.idempotency import (
    Busy,
    Replay,
    TakeOver,
    decide,
    fingerprint,
    valid_key,
)
from checkout_core.service.ports import IdempotencyRecord, Outcome

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def record(outcome: Outcome | None = None, lease: int = 10) -> IdempotencyRecord:
    return IdempotencyRecord("k", "fp", "co_chk_1", "req_1", NOW + timedelta(seconds=lease),
                             outcome)


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        (record(Outcome(order_id="co_ord_1")), Replay(Outcome(order_id="co_ord_1"))),
        (record(Outcome(error_code="payment-declined", detail="d")),
         Replay(Outcome(None, "payment-declined", "d"))),
        (record(None, lease=10), Busy()),
        (record(None, lease=0), TakeOver()),
        (record(None, lease=-5), TakeOver()),
    ],
)
def test_decide_for_the_same_request(existing: IdempotencyRecord, expected: object) -> None:
    assert decide(existing, "fp", NOW) == expected


def test_same_key_different_request_is_reuse_even_once_completed() -> None:
    for existing in (record(), record(Outcome(order_id="co_ord_1"))):
        with pytest.raises(IdempotencyKeyReuse):
            decide(existing, "other", NOW)


def test_fingerprint_ignores_key_order_but_not_values() -> None:
    a = fingerprint("co_chk_1", {"payment": {"method": "card", "token": "tok_visa"}})
    b = fingerprint("co_chk_1", {"payment": {"token": "tok_visa", "method": "card"}})
    c = fingerprint("co_chk_1", {"payment": {"method": "card", "token": "tok_other"}})
    d = fingerprint("co_chk_2", {"payment": {"method": "card", "token": "tok_visa"}})
    assert a == b
    assert len({a, c, d}) == 3


@pytest.mark.parametrize(
    ("key", "ok"),
    [("k", True), ("a" * 255, True), ("order 42 / retry #1", True), ("", False),
     ("a" * 256, False), ("tab\there", False), ("naïve", False), ("line\n", False)],
)
def test_key_syntax(key: str, ok: bool) -> None:
    assert valid_key(key) is ok
