"""One contract suite for the control store, run against both adapters (SQLite and Redis)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from control.store import AuditEntry, ControlStore, KillSwitch, RulesVersion, VersionConflict
from control.store.redis_store import RedisControlStore
from control.store.sqlite_store import SqliteControlStore

StoreFactory = Callable[[], ControlStore]


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """New store objects on one shared backend: each call is a new connection or client."""
    opened: list[ControlStore] = []
    if request.param == "sqlite":
        path = tmp_path / "control.sqlite3"

        def open_one() -> ControlStore:
            return SqliteControlStore(path)
    else:
        url = request.getfixturevalue("redis_clean_url")

        def open_one() -> ControlStore:
            return RedisControlStore(url)

    def factory() -> ControlStore:
        store = open_one()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> ControlStore:
    return make_store()


def audit(action: str = "rules.apply", *, actor: str = "alice", target: str = "test",
          reason: str = "because", **details: object) -> AuditEntry:
    return AuditEntry(time.time(), actor, action, target, reason, dict(details))


def apply(store: ControlStore, text: str, *, expected: int | None, actor: str = "alice",
          reason: str = "because") -> RulesVersion:
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return store.apply_rules(
        text, digest, expected_version=expected, actor=actor, reason=reason, source="test",
        audit=audit("rules.apply", actor=actor, reason=reason, digest=digest),
    )


def switch(scope: str, reason: str = "INC-1", evidence: dict[str, object] | None = None
           ) -> KillSwitch:
    return KillSwitch(scope, reason, "bob", time.time(), evidence)


# --- epoch ------------------------------------------------------------------------------

WRITES: dict[str, Callable[[ControlStore], object]] = {
    "apply_rules": lambda s: apply(s, "second", expected=1),
    "set_kill": lambda s: s.set_kill(switch("warranties"), audit("kill")),
    "clear_kill_of_a_set_switch": lambda s: s.clear_kill("*", audit("unkill")),
    "record_audit": lambda s: s.record_audit(audit("note")),
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_epoch_changes_on_every_write(store, write):
    apply(store, "first", expected=None)
    store.set_kill(switch("*"), audit("kill"))
    before = store.epoch()
    write(store)
    assert store.epoch() != before


def test_epoch_does_not_change_on_reads(store):
    apply(store, "first", expected=None)
    before = store.epoch()
    store.active_rules()
    store.rules_history()
    store.kill_switches()
    store.audit_log()
    assert store.epoch() == before


# --- rules versions ---------------------------------------------------------------------


def test_empty_store_has_no_rules_no_history_and_no_kills(store):
    assert store.active_rules() is None
    assert store.rules_history() == []
    assert store.rules_version(1) is None
    assert store.kill_switches() == {}
    assert store.audit_log() == []


def test_apply_rules_versions_increase_and_the_latest_is_active(store):
    first = apply(store, "one", expected=None)
    second = apply(store, "two", expected=first.version)
    third = apply(store, "three", expected=second.version)
    assert first.version < second.version < third.version
    assert store.active_rules() == third


def test_apply_rules_returns_what_is_stored(store):
    record = apply(store, "one", expected=None, actor="alice", reason="pilot IE")
    assert record.text == "one"
    assert record.actor == "alice"
    assert record.reason == "pilot IE"
    assert record.source == "test"
    assert record.digest == hashlib.sha256(b"one").hexdigest()[:12]
    assert store.rules_version(record.version) == record


@pytest.mark.parametrize(
    ("applied", "expected"),
    [
        pytest.param(0, 1, id="expects-a-version-when-none-exists"),
        pytest.param(1, None, id="expects-none-when-rules-exist"),
        pytest.param(2, 1, id="expects-a-stale-version"),
        pytest.param(1, 7, id="expects-a-future-version"),
    ],
)
def test_apply_rules_with_unexpected_version_raises_version_conflict_and_stores_nothing(
    store, applied, expected
):
    active = None
    for i in range(applied):
        active = apply(store, f"v{i}", expected=active.version if active else None)
    epoch = store.epoch()
    with pytest.raises(VersionConflict) as info:
        apply(store, "late", expected=expected)
    assert info.value.expected == expected
    assert info.value.actual == (active.version if active else None)
    assert store.active_rules() == active
    assert len(store.rules_history()) == applied
    assert store.epoch() == epoch
    assert len(store.audit_log()) == applied


@pytest.mark.parametrize(("limit", "count"), [(50, 4), (2, 2), (1, 1), (0, 0)])
def test_rules_history_is_newest_first_and_honours_the_limit(store, limit, count):
    active = None
    for text in ["a", "b", "c", "d"]:
        active = apply(store, text, expected=active.version if active else None)
    history = store.rules_history(limit)
    assert [r.text for r in history] == ["d", "c", "b", "a"][:count]
    assert [r.version for r in history] == sorted((r.version for r in history), reverse=True)


def test_rules_version_finds_old_versions_and_none_for_unknown(store):
    first = apply(store, "one", expected=None)
    apply(store, "two", expected=first.version)
    assert store.rules_version(first.version) == first
    assert store.rules_version(999) is None


# --- kill switches ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "evidence",
    [None, {}, {"guardrail": "payment_failed", "core": 0.12, "legacy": 0.01, "n": [120, 98]}],
    ids=["no-evidence", "empty-evidence", "nested-evidence"],
)
def test_kill_switch_round_trips_with_its_evidence(store, evidence):
    killed = switch("warranties", "INC-7 payment errors", evidence)
    store.set_kill(killed, audit("kill"))
    assert store.kill_switches() == {"warranties": killed}


def test_kill_switches_are_kept_per_scope_and_setting_again_replaces(store):
    store.set_kill(switch("*", "global"), audit("kill"))
    store.set_kill(switch("warranties", "first"), audit("kill"))
    again = switch("warranties", "second")
    store.set_kill(again, audit("kill"))
    kills = store.kill_switches()
    assert set(kills) == {"*", "warranties"}
    assert kills["warranties"] == again


def test_clear_kill_returns_the_previous_switch_and_removes_only_that_scope(store):
    killed = switch("warranties", "INC-7", {"rate": 0.2})
    store.set_kill(killed, audit("kill"))
    store.set_kill(switch("*"), audit("kill"))
    assert store.clear_kill("warranties", audit("unkill")) == killed
    assert set(store.kill_switches()) == {"*"}


def test_clear_kill_of_a_missing_scope_returns_none_and_writes_nothing(store):
    store.set_kill(switch("*"), audit("kill"))
    before, audited = store.epoch(), store.audit_log()
    assert store.clear_kill("warranties", audit("unkill")) is None
    assert set(store.kill_switches()) == {"*"}
    assert store.audit_log() == audited  # clearing nothing is not an event
    assert store.epoch() == before


# --- audit ------------------------------------------------------------------------------


def test_apply_kill_and_unkill_write_audit_entries_newest_first(store):
    apply(store, "one", expected=None, actor="alice", reason="pilot")
    store.set_kill(switch("warranties"), audit("kill", actor="bob", target="warranties",
                                               reason="INC-7", evidence={"rate": 0.2}))
    store.clear_kill("warranties", audit("unkill", actor="carol", target="warranties",
                                         reason="fixed"))
    log = store.audit_log()
    assert [(e.action, e.actor, e.target, e.reason) for e in log] == [
        ("unkill", "carol", "warranties", "fixed"),
        ("kill", "bob", "warranties", "INC-7"),
        ("rules.apply", "alice", "test", "pilot"),
    ]
    assert log[1].details == {"evidence": {"rate": 0.2}}
    assert log[2].details == {"digest": hashlib.sha256(b"one").hexdigest()[:12]}


def test_record_audit_round_trips_and_audit_log_honours_the_limit(store):
    entries = [audit("note", actor=f"user{i}", reason=f"r{i}", n=i) for i in range(5)]
    for entry in entries:
        store.record_audit(entry)
    assert store.audit_log() == entries[::-1]
    assert store.audit_log(2) == entries[:2:-1][:2]
    assert store.audit_log(0) == []


# --- meta -------------------------------------------------------------------------------


def test_meta_is_none_until_set_and_set_overwrites(store):
    assert store.get_meta("file:/rules.yaml") is None
    store.set_meta("file:/rules.yaml", "abc")
    store.set_meta("file:/rules.yaml", "def")
    assert store.get_meta("file:/rules.yaml") == "def"


# --- several clients --------------------------------------------------------------------


def test_two_store_objects_on_one_backend_see_each_others_writes(make_store):
    one, two = make_store(), make_store()
    first = apply(one, "one", expected=None)
    assert two.active_rules() == first
    second = apply(two, "two", expected=first.version)
    assert one.active_rules() == second
    one.set_kill(switch("warranties"), audit("kill"))
    assert set(two.kill_switches()) == {"warranties"}
    two.set_meta("k", "v")
    assert one.get_meta("k") == "v"
    assert one.epoch() == two.epoch()
    assert [e.action for e in two.audit_log()] == ["kill", "rules.apply", "rules.apply"]


def test_a_stale_client_gets_version_conflict_after_another_client_applied(make_store):
    one, two = make_store(), make_store()
    first = apply(one, "one", expected=None)
    apply(two, "two", expected=first.version)
    with pytest.raises(VersionConflict):
        apply(one, "three", expected=first.version)


@pytest.mark.parametrize("shared", [True, False], ids=["one-store-object", "store-per-thread"])
def test_concurrent_applies_with_the_same_expected_version_have_exactly_one_winner(
    make_store, shared
):
    threads_n = 8
    base = apply(make_store(), "base", expected=None)
    stores = [make_store()] * threads_n if shared else [make_store() for _ in range(threads_n)]
    barrier = threading.Barrier(threads_n)
    won: list[RulesVersion] = []
    conflicts: list[VersionConflict] = []
    errors: list[BaseException] = []

    def contend(i: int) -> None:
        barrier.wait()
        try:
            won.append(apply(stores[i], f"candidate {i}", expected=base.version))
        except VersionConflict as exc:
            conflicts.append(exc)
        except BaseException as exc:  # noqa: BLE001  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(won) == 1
    assert len(conflicts) == threads_n - 1
    assert all(c.actual == won[0].version for c in conflicts)
    reader = make_store()
    assert reader.active_rules() == won[0]
    assert [r.text for r in reader.rules_history()] == [won[0].text, "base"]
    assert len(reader.audit_log()) == 2
