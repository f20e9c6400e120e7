"""The in-process sticky store: a bounded LRU with a sliding idle TTL."""

from __future__ import annotations

import pytest

from control.decision import Backend, Reason
from proxy.sticky import LocalSticky, starts_checkout


def test_remembers_either_backend_and_forgets_on_release() -> None:
    store = LocalSticky(1000)
    store.set_local("f:a", Backend.CORE, 60, now=100.0)
    store.set_local("f:b", Backend.LEGACY, 60, now=100.0)
    assert store.get_local("f:a", now=101.0) is Backend.CORE
    assert store.get_local("f:b", now=101.0) is Backend.LEGACY
    assert store.get_local("f:c", now=101.0) is None
    store.release_local("f:a")
    assert store.get_local("f:a", now=102.0) is None
    assert len(store) == 1


def test_idle_units_expire_and_each_hit_extends_the_ttl() -> None:
    store = LocalSticky(1000)
    store.set_local("f:a", Backend.LEGACY, 60, now=100.0)
    assert store.get_local("f:a", now=150.0) is Backend.LEGACY  # now idle until 210
    assert store.get_local("f:a", now=200.0) is Backend.LEGACY  # now until 260
    assert store.get_local("f:a", now=261.0) is None
    assert len(store) == 0


def test_the_least_recently_used_unit_goes_first_when_full() -> None:
    store = LocalSticky(3)
    for key in ("f:a", "f:b", "f:c"):
        store.set_local(key, Backend.CORE, 60, now=100.0)
    assert store.get_local("f:a", now=101.0) is Backend.CORE  # a is now the newest
    store.set_local("f:d", Backend.LEGACY, 60, now=102.0)
    assert len(store) == 3
    assert store.get_local("f:b", now=103.0) is None  # the oldest went
    assert [store.get_local(k, now=103.0) for k in ("f:a", "f:c", "f:d")] == [
        Backend.CORE, Backend.CORE, Backend.LEGACY]


def test_a_reassignment_replaces_the_backend() -> None:
    store = LocalSticky(1000)
    store.set_local("f:a", Backend.CORE, 60, now=100.0)
    store.set_local("f:a", Backend.LEGACY, 60, now=110.0)
    assert store.get_local("f:a", now=111.0) is Backend.LEGACY
    assert len(store) == 1


# (reason, status, signals, starts or renews an in-flight checkout)
IN_FLIGHT = [
    (Reason.RULE, 201, (), True),  # a cart created for the unit
    (Reason.DEFAULT, 201, (), True),
    (Reason.FAILOVER, 201, (), True),
    (Reason.OWNER, 201, ("checkout_started",), True),  # the cart's owner, checking out
    (Reason.RULE, 201, ("checkout_started",), True),
    (Reason.RULE, 200, (), False),  # browsing: no cart, nothing to come back to
    (Reason.RULE, 404, (), False),
    (Reason.RULE, 422, (), False),  # a cart refused
    (Reason.FAILOVER, 503, (), False),
    (Reason.OWNER, 201, (), False),  # an item added to a cart it already has
    (Reason.STICKY, 201, (), False),  # already in flight
    (Reason.KILL_SWITCH, 201, (), False),
    (Reason.KILL_SWITCH, 201, ("checkout_started",), False),
    (Reason.ERROR, 201, (), False),
]


@pytest.mark.parametrize(("reason", "status", "signals", "expected"), IN_FLIGHT)
def test_only_an_answer_that_starts_a_checkout_makes_a_unit_sticky(
    reason: Reason, status: int, signals: tuple[str, ...], expected: bool,
) -> None:
    assert starts_checkout(reason, status, signals) is expected
