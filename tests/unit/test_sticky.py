"""The in-process sticky store: a bounded LRU with a sliding idle TTL."""

from __future__ import annotations

from control.decision import Backend
from proxy.sticky import LocalSticky


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
