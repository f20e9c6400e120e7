"""The asynchronous mirror, with an injected send() standing in for the core."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Sequence
from typing import Any, cast

import pytest

from shadow.idmap import MemoryIdMap, derive_idempotency_key
from shadow.mirror import Mirror, MirrorJob, MirrorSettings, mirror_headers
from shadow.report import MemoryShadowReport
from shadow.selection import select
from shadow.spec import ShadowConfig

ALL = ShadowConfig(basis_points=10_000)
WAIT = 10.0  # seconds any condition below may take, at most


class FakeCore:
    """Mints co_ ids like the core and prices every item at 100; can be held or failed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[tuple[str, str]], bytes]] = []
        self.carts: dict[str, list[dict[str, Any]]] = {}
        self.ids = itertools.count(1)
        self.gate: asyncio.Event | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.in_flight_by_cart: dict[str, int] = {}
        self.overlap_within_a_cart = False
        self.fail: BaseException | None = None

    async def send(self, method: str, path: str, headers: list[tuple[str, str]],
                   body: bytes) -> tuple[int, Sequence[tuple[str, str]], bytes]:
        self.calls.append((method, path, headers, body))
        cart = path.split("/")[2] if path.count("/") >= 2 else ""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.in_flight_by_cart[cart] = self.in_flight_by_cart.get(cart, 0) + 1
        if cart and self.in_flight_by_cart[cart] > 1:
            self.overlap_within_a_cart = True
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail is not None:
                raise self.fail
            return self._answer(method, path, body)
        finally:
            self.in_flight -= 1
            self.in_flight_by_cart[cart] -= 1

    def _answer(self, method: str, path: str,
                body: bytes) -> tuple[int, Sequence[tuple[str, str]], bytes]:
        if method == "POST" and path == "/carts":
            cart_id = f"co_cart_{next(self.ids)}"
            self.carts[cart_id] = []
            return 201, [("content-type", "application/json")], _cart(cart_id, [])
        cart_id = path.split("/")[2]
        if cart_id not in self.carts:
            return 404, [], b'{"type": "https://checkout.example/problems/not-found"}'
        if method == "POST" and path.endswith("/items"):
            self.carts[cart_id].append(json.loads(body))
            return 201, [], _cart(cart_id, self.carts[cart_id])
        return 200, [], _cart(cart_id, self.carts[cart_id])


def _cart(cart_id: str, items: list[dict[str, Any]]) -> bytes:
    lines = [{"sku": i["sku"], "quantity": i["quantity"], "line_total": 100 * i["quantity"]}
             for i in items]
    return json.dumps({"id": cart_id, "items": lines,
                       "total": sum(line["line_total"] for line in lines)}).encode()


def job(unit: str, method: str, path: str, legacy: dict[str, Any] | bytes, status: int = 201,
        body: bytes = b"", headers: Sequence[tuple[str, str]] = (),
        funnel: str = "hw") -> MirrorJob:
    selection = select(ALL, "salt", unit, method, path)
    assert selection is not None
    raw = legacy if isinstance(legacy, bytes) else json.dumps(legacy).encode()
    return MirrorJob(funnel, unit, selection, method, headers, body, status, raw)


def legacy_cart(cart_id: str, items: list[tuple[str, int]]) -> dict[str, Any]:
    lines = [{"sku": s, "quantity": q, "line_total": 100 * q} for s, q in items]
    return {"id": cart_id, "items": lines, "total": sum(x["line_total"] for x in lines)}


def item(sku: str, quantity: int = 1) -> bytes:
    return json.dumps({"sku": sku, "quantity": quantity}).encode()


def cart_jobs(unit: str, n_items: int = 2) -> list[MirrorJob]:
    lg = f"lg_cart_{unit}"
    jobs = [job(unit, "POST", "/carts", legacy_cart(lg, []), body=b'{"country": "DE"}')]
    items: list[tuple[str, int]] = []
    for i in range(n_items):
        items.append((f"SKU-{i}", 1))
        jobs.append(job(unit, "POST", f"/carts/{lg}/items", legacy_cart(lg, list(items)),
                        body=item(f"SKU-{i}")))
    return jobs


@pytest.fixture
def core() -> FakeCore:
    return FakeCore()


@pytest.fixture
def store() -> MemoryShadowReport:
    return MemoryShadowReport()


def make(core: FakeCore, store: MemoryShadowReport | None = None, **settings: Any) -> Mirror:
    defaults: dict[str, Any] = {"unmapped_wait": 0.2, "unmapped_poll": 0.01,
                                "flush_interval": 3600}
    return Mirror(core.send, MemoryIdMap(), store, MirrorSettings(**{**defaults, **settings}))


async def idle(mirror: Mirror) -> None:
    await asyncio.wait_for(mirror.wait_idle(), WAIT)


async def until(condition: Any) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)
    await asyncio.wait_for(poll(), WAIT)


async def test_a_units_requests_are_replayed_in_order_with_core_ids(
        core: FakeCore, store: MemoryShadowReport) -> None:
    mirror = make(core, store)
    await mirror.start()
    try:
        for j in cart_jobs("u1", n_items=3):
            assert mirror.submit(j) is True
        await idle(mirror)
    finally:
        await mirror.stop()
    assert [(m, p) for m, p, _, _ in core.calls] == [
        ("POST", "/carts"), ("POST", "/carts/co_cart_1/items"),
        ("POST", "/carts/co_cart_1/items"), ("POST", "/carts/co_cart_1/items")]
    assert [json.loads(b)["sku"] for _, _, _, b in core.calls[1:]] == ["SKU-0", "SKU-1", "SKU-2"]
    assert await mirror.idmap.get("u1") == {"lg_cart_u1": "co_cart_1"}
    summary = store.summary()
    funnel = summary["funnels"]["hw"]
    assert (funnel["comparisons"], funnel["mismatches"]) == (4, 0)
    assert funnel["units"]["compared"] == 1
    assert mirror.stats()["compared"] == 4 and mirror.stats()["dropped"] == {}


async def test_units_go_in_parallel_up_to_the_concurrency_and_one_at_a_time_each(
        core: FakeCore) -> None:
    core.gate = asyncio.Event()
    mirror = make(core, concurrency=3)
    await mirror.start()
    try:
        for unit in [f"u{i}" for i in range(8)]:
            for j in cart_jobs(unit, n_items=2):
                mirror.submit(j)
        await until(lambda: core.in_flight == 3)
        assert mirror.stats()["in_flight"] == 3
        core.gate.set()
        await idle(mirror)
    finally:
        await mirror.stop()
    assert core.max_in_flight == 3
    assert not core.overlap_within_a_cart
    assert len(core.calls) == 8 * 3
    assert mirror.dropped == {}


class FakeCpu:
    """The CPU seconds of the loop's thread as the test says: `share` of the clock's time
    since the last change (the probe divides by the loop's clock, time.monotonic)."""

    def __init__(self, share: float) -> None:
        self.share = share
        self.seconds = 0.0
        self.at = time.monotonic()

    def __call__(self) -> float:
        now = time.monotonic()
        self.seconds += (now - self.at) * self.share
        self.at = now
        return self.seconds

    def set(self, share: float) -> None:
        self()
        self.share = share


def busy_mirror(core: FakeCore, cpu: FakeCpu) -> Mirror:
    """A mirror gated on the injected CPU share only (the lag bar out of reach)."""
    return Mirror(core.send, MemoryIdMap(), None,
                  MirrorSettings(max_busy=0.5, lag_probe=0.01, busy_lag=60.0,
                                 flush_interval=3600), cpu_time=cpu)


async def test_a_saturated_loop_replays_nothing_until_it_has_room(core: FakeCore) -> None:
    cpu = FakeCpu(share=1.0)  # customers keep the loop on the CPU all the time
    mirror = busy_mirror(core, cpu)
    await mirror.start()
    try:
        await until(lambda: mirror.stats()["loop_busy"] > 0.5)
        jobs = cart_jobs("u1") + cart_jobs("u2")
        assert all(mirror.submit(j) for j in jobs)
        # workers were already waiting for work when the loop got busy: they must not take
        # it now; give them time to (wrongly) send
        await asyncio.sleep(0.3)
        assert core.calls == [] and mirror.sent == 0
        assert mirror.queued == len(jobs) and mirror.stats()["paused"] >= 1
        cpu.set(0.1)  # the customers leave room
        await idle(mirror)
    finally:
        await mirror.stop()
    assert mirror.sent == mirror.compared == len(jobs) and mirror.dropped == {}
    assert mirror.stats()["loop_busy"] <= 0.5


async def test_replays_stop_when_the_loop_gets_busy(
        core: FakeCore) -> None:
    cpu = FakeCpu(share=0.0)
    mirror = busy_mirror(core, cpu)
    await mirror.start()
    try:
        first = job("u0", "POST", "/carts", legacy_cart("lg_0", []))
        assert mirror.submit(first)
        await until(lambda: mirror.compared == 1)  # an idle loop replays at once
        cpu.set(1.0)
        await until(lambda: mirror.stats()["loop_busy"] > 0.5)
        later = [job(f"u{i}", "POST", "/carts", legacy_cart(f"lg_{i}", [])) for i in range(1, 4)]
        assert all(mirror.submit(j) for j in later)
        await asyncio.sleep(0.3)  # a window in which nothing may be sent
        assert mirror.sent == 1 and mirror.queued == 3
    finally:
        cpu.set(0.0)
        await mirror.stop()
    assert mirror.compared == 4


async def test_a_full_queue_drops_and_counts_without_blocking(core: FakeCore,
                                                              store: MemoryShadowReport) -> None:
    core.gate = asyncio.Event()
    dropped: list[tuple[str, str]] = []
    mirror = Mirror(core.send, MemoryIdMap(), store,
                    MirrorSettings(max_queue=3, concurrency=1, flush_interval=3600),
                    on_dropped=lambda f, r, n: dropped.extend([(f, r)] * n))
    await mirror.start()
    try:
        jobs = [job(f"u{i}", "POST", "/carts", legacy_cart(f"lg_{i}", [])) for i in range(6)]
        assert mirror.submit(jobs[0])
        await until(lambda: core.in_flight == 1)  # the first is being sent
        verdicts = [mirror.submit(j) for j in jobs[1:]]
        assert verdicts == [True, True, True, False, False]
        assert mirror.queued == 3
        core.gate.set()
        await idle(mirror)
    finally:
        await mirror.stop()
    assert mirror.dropped == {"queue_full": 2}
    assert dropped == [("hw", "queue_full")] * 2
    assert store.summary()["funnels"]["hw"]["dropped"] == {"queue_full": 2}


async def test_queued_bytes_are_bounded_too(core: FakeCore) -> None:
    core.gate = asyncio.Event()
    mirror = make(core, concurrency=1, max_queue_bytes=1000, max_body_bytes=400)
    await mirror.start()
    try:
        assert mirror.submit(job("u0", "POST", "/carts", b"x" * 300))
        await until(lambda: core.in_flight == 1)  # taken off the queue: its bytes too
        assert mirror.stats()["queued_bytes"] == 0
        verdicts = [mirror.submit(job(f"u{i}", "POST", "/carts", b"x" * 300))
                    for i in range(1, 5)]
        assert verdicts == [True, True, True, False]
        assert mirror.stats()["queued_bytes"] == 900
        core.gate.set()
        await idle(mirror)
    finally:
        await mirror.stop()
    assert mirror.dropped == {"queue_full": 1}
    assert mirror.stats()["queued_bytes"] == 0


async def test_queued_headers_count_against_the_byte_bound(core: FakeCore) -> None:
    # a customer's big request head held in the queue is memory like a body
    core.gate = asyncio.Event()
    mirror = make(core, concurrency=1, max_queue_bytes=20_000)
    await mirror.start()
    try:
        assert mirror.submit(job("u0", "POST", "/carts", b"{}"))
        await until(lambda: core.in_flight == 1)
        big = [("accept", "x" * 8_000)]
        verdicts = [mirror.submit(job(f"u{i}", "POST", "/carts", b"{}", headers=big))
                    for i in range(1, 4)]
        assert verdicts == [True, True, False]
        assert mirror.stats()["queued_bytes"] >= 16_000
        assert not mirror.has_room() or mirror.stats()["queued_bytes"] < 20_000
        core.gate.set()
        await idle(mirror)
    finally:
        await mirror.stop()
    assert mirror.dropped == {"queue_full": 1}
    assert mirror.stats()["queued_bytes"] == 0


async def test_a_request_naming_an_unknown_id_is_dropped_not_sent(core: FakeCore) -> None:
    mirror = make(core)
    await mirror.start()
    try:
        mirror.submit(job("u", "POST", "/carts/lg_cart_nowhere/items",
                          legacy_cart("lg_cart_nowhere", [("A", 1)]), body=item("A")))
        await idle(mirror)
    finally:
        await mirror.stop()
    assert core.calls == []
    assert mirror.dropped == {"unmapped": 1}


async def test_an_id_mapped_meanwhile_by_another_replica_is_waited_for(core: FakeCore) -> None:
    mirror = make(core, unmapped_wait=WAIT)
    core.carts["co_cart_77"] = []
    await mirror.start()
    try:
        mirror.submit(job("u", "POST", "/carts/lg_cart_1/items", legacy_cart("lg_cart_1", [("A", 1)]),
                          body=item("A")))
        await until(lambda: mirror.stats()["in_flight"] == 1)
        await mirror.idmap.add("u", {"lg_cart_1": "co_cart_77"})  # the other replica's pair
        await idle(mirror)
    finally:
        await mirror.stop()
    assert [(m, p) for m, p, _, _ in core.calls] == [("POST", "/carts/co_cart_77/items")]
    assert mirror.dropped == {}


async def test_a_legacy_404_is_not_waited_for(core: FakeCore) -> None:
    class CountingMap(MemoryIdMap):
        gets = 0

        async def get(self, unit: str) -> dict[str, str]:
            CountingMap.gets += 1
            return await super().get(unit)

    mirror = Mirror(core.send, CountingMap(), None,
                    MirrorSettings(unmapped_wait=WAIT, flush_interval=3600))
    await mirror.start()
    try:
        mirror.submit(job("u", "GET", "/carts/lg_cart_gone", b'{"status": 404}', status=404))
        await idle(mirror)
    finally:
        await mirror.stop()
    assert CountingMap.gets == 1
    assert mirror.dropped == {"unmapped": 1}


def test_mirrored_headers_carry_the_shadow_mark_and_a_derived_key_and_nothing_private() -> None:
    customer = [("Content-Type", "application/json"), ("Cookie", "checkout_session=s"),
                ("Authorization", "Bearer t"), ("Idempotency-Key", "k-1"),
                ("X-Forwarded-For", "10.0.0.1"), ("Accept", "application/json"),
                ("X-Checkout-Session", "s"), ("User-Agent", "phone")]
    headers = mirror_headers("POST", customer, b'{"a": 1}')
    assert headers == [("content-type", "application/json"), ("accept", "application/json"),
                       ("idempotency-key", derive_idempotency_key("k-1")),
                       ("x-checkout-shadow", "1"), ("content-length", "8")]
    assert mirror_headers("GET", [], b"") == [("x-checkout-shadow", "1")]
    assert ("content-length", "0") in mirror_headers("POST", [], b"")


async def test_the_core_gets_the_mirrored_headers(core: FakeCore) -> None:
    mirror = make(core)
    await mirror.start()
    try:
        mirror.submit(job("u", "POST", "/carts", legacy_cart("lg_1", []), body=b"{}",
                          headers=[("Cookie", "a=b"), ("Idempotency-Key", "mine")]))
        await idle(mirror)
    finally:
        await mirror.stop()
    (_, _, headers, _), = core.calls
    names = dict(headers)
    assert names["x-checkout-shadow"] == "1"
    assert names["idempotency-key"] != "mine"
    assert "cookie" not in names


async def test_failures_are_counted_and_the_mirror_carries_on(core: FakeCore) -> None:
    mirror = make(core)
    await mirror.start()
    try:
        core.fail = ConnectionError("core down")
        mirror.submit(job("u1", "POST", "/carts", legacy_cart("lg_1", [])))
        await idle(mirror)
        core.fail = None
        mirror.submit(job("u2", "POST", "/carts", legacy_cart("lg_2", [])))
        await idle(mirror)
    finally:
        await mirror.stop()
    assert mirror.dropped == {"error": 1}
    assert mirror.compared == 1


async def test_a_slow_core_times_out_as_an_error(core: FakeCore) -> None:
    core.gate = asyncio.Event()  # never set
    mirror = make(core, send_timeout=0.05)
    await mirror.start()
    try:
        mirror.submit(job("u", "POST", "/carts", legacy_cart("lg_1", [])))
        await idle(mirror)
    finally:
        await mirror.stop()
    assert mirror.dropped == {"error": 1}


async def test_a_failing_id_map_is_an_error_not_an_exception(core: FakeCore) -> None:
    class Broken(MemoryIdMap):
        async def get(self, unit: str) -> dict[str, str]:
            raise OSError("redis gone")

    mirror = Mirror(core.send, Broken(), None, MirrorSettings(flush_interval=3600))
    await mirror.start()
    try:
        mirror.submit(job("u", "POST", "/carts", legacy_cart("lg_1", [])))
        await idle(mirror)
    finally:
        await mirror.stop()
    assert mirror.dropped == {"error": 1}


async def test_legacy_errors_and_large_bodies_are_not_replayed(core: FakeCore) -> None:
    mirror = make(core, max_body_bytes=100)
    await mirror.start()
    try:
        mirror.submit(job("u", "POST", "/carts", b'{"type": "injected-fault"}', status=500))
        assert mirror.submit(job("u", "POST", "/carts", b"x" * 101)) is False
        await idle(mirror)
    finally:
        await mirror.stop()
    assert core.calls == []
    assert mirror.dropped == {"legacy_error": 1, "too_large": 1}


async def test_submit_never_raises(core: FakeCore) -> None:
    mirror = make(core)
    await mirror.start()
    try:
        assert mirror.submit(cast(MirrorJob, object())) is False
    finally:
        await mirror.stop()
    assert mirror.dropped == {"error": 1}


async def test_before_start_and_after_stop_jobs_are_dropped(core: FakeCore) -> None:
    mirror = make(core)
    assert mirror.submit(job("u", "POST", "/carts", legacy_cart("lg_1", []))) is False
    await mirror.start()
    await mirror.stop()
    assert mirror.submit(job("u", "POST", "/carts", legacy_cart("lg_1", []))) is False
    assert mirror.dropped == {"stopped": 2}


async def test_stop_drains_the_queue(core: FakeCore, store: MemoryShadowReport) -> None:
    core.gate = asyncio.Event()
    mirror = make(core, store, concurrency=1)
    await mirror.start()
    for j in cart_jobs("u", n_items=3):
        mirror.submit(j)
    await until(lambda: core.in_flight == 1)
    stopping = asyncio.create_task(mirror.stop(timeout=WAIT))
    await until(lambda: not mirror.stats()["accepting"])
    core.gate.set()
    await asyncio.wait_for(stopping, WAIT)
    assert len(core.calls) == 4 and mirror.dropped == {}
    assert store.summary()["funnels"]["hw"]["comparisons"] == 4  # flushed at stop


async def test_stop_gives_up_after_its_timeout_and_counts_what_is_left(core: FakeCore) -> None:
    core.gate = asyncio.Event()  # never set
    mirror = make(core, concurrency=1, send_timeout=WAIT)
    await mirror.start()
    for j in cart_jobs("u", n_items=2):
        mirror.submit(j)
    await until(lambda: core.in_flight == 1)
    await mirror.stop(timeout=0.05)
    assert mirror.dropped == {"stopped": 3}  # the one in flight and the two queued
    assert mirror.stats()["queued"] == 0


async def test_mismatches_are_reported_with_callbacks(core: FakeCore,
                                                      store: MemoryShadowReport) -> None:
    seen: list[tuple[str, str, bool]] = []
    mirror = Mirror(core.send, MemoryIdMap(), store, MirrorSettings(flush_interval=3600),
                    on_compared=lambda f, r, ok: seen.append((f, r, ok)))
    await mirror.start()
    try:
        mirror.submit(job("u", "POST", "/carts", legacy_cart("lg_1", [])))
        wrong = legacy_cart("lg_1", [("A", 1)])
        wrong["total"] = 99  # legacy says 99, the core 100
        mirror.submit(job("u", "POST", "/carts/lg_1/items", wrong, body=item("A")))
        await idle(mirror)
    finally:
        await mirror.stop()
    assert seen == [("hw", "POST /carts", True), ("hw", "POST /carts/{cart_id}/items", False)]
    fields = store.summary()["funnels"]["hw"]["routes"]["POST /carts/{cart_id}/items"]["fields"]
    assert {p for p, f in fields.items() if f["mismatches"]} == {"total"}
    assert fields["total"]["examples"][0] | {"at": 0} == {
        "field": "total", "where": "total", "kind": "money", "legacy": 99, "core": 100,
        "route": "POST /carts/{cart_id}/items", "at": 0, "legacy_id": "lg_1",
        "core_id": "co_cart_1"}


async def test_the_flush_loop_writes_batches_periodically(core: FakeCore,
                                                          store: MemoryShadowReport) -> None:
    mirror = Mirror(core.send, MemoryIdMap(), store, MirrorSettings(flush_interval=0.01))
    await mirror.start()
    try:
        mirror.submit(job("u", "POST", "/carts", legacy_cart("lg_1", [])))
        await until(lambda: store.summary()["funnels"].get("hw", {}).get("comparisons") == 1)
    finally:
        await mirror.stop()


async def test_a_failing_store_costs_figures_not_the_mirror(core: FakeCore) -> None:
    class Broken(MemoryShadowReport):
        def add(self, batch: Any) -> None:
            raise OSError("store down")

    mirror = Mirror(core.send, MemoryIdMap(), Broken(), MirrorSettings(flush_interval=3600))
    await mirror.start()
    mirror.submit(job("u", "POST", "/carts", legacy_cart("lg_1", [])))
    await idle(mirror)
    await mirror.stop()
    assert mirror.flush_errors == 1 and mirror.compared == 1
