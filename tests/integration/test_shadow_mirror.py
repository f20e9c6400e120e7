"""Shadow parity end to end over real HTTP: customers build carts on the legacy stub, the
mirror replays them to the real checkout core with the id map, and the report compares.

Without a proxy: the test plays the proxy's part (legacy answers, then the request is
handed to the mirror), so it checks the building blocks the proxy will wire.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from shadow.idmap import MemoryIdMap
from shadow.idmap_redis import RedisIdMap
from shadow.mirror import Mirror, MirrorJob, MirrorSettings, Send
from shadow.report import MemoryShadowReport, ShadowStore
from shadow.report_redis import RedisShadowReport
from shadow.selection import select
from shadow.spec import ShadowConfig
from tests.support.checkout_contract import ADDRESS, VISA, core_app, legacy_app, new_key
from tests.support.servers import ServerThread, serve

FUNNEL, SALT = "hardware", "hw-salt"
CONFIG = ShadowConfig(basis_points=10_000)
WAIT = 30.0
SE_TAX_BP = 2500


@dataclass
class Backends:
    legacy: ServerThread
    core: ServerThread


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backends]:
    workdir = tmp_path_factory.mktemp("shadow")
    with serve(legacy_app(workdir)) as legacy, serve(core_app(workdir)) as core:
        yield Backends(legacy, core)


@dataclass
class CoreLog:
    """Every request the mirror sent to the core."""

    calls: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
async def core_send(backends: Backends) -> AsyncIterator[tuple[Send, CoreLog]]:
    log = CoreLog()
    async with httpx.AsyncClient(base_url=backends.core.url, timeout=WAIT) as client:
        async def send(method: str, path: str, headers: list[tuple[str, str]],
                       body: bytes) -> tuple[int, Sequence[tuple[str, str]], bytes]:
            log.calls.append((method, path, dict(headers)))
            response = await client.request(method, path, headers=headers, content=body)
            return response.status_code, list(response.headers.items()), response.content

        yield send, log


def rounded_down_in_sweden(send: Send) -> Send:
    """A pricing drift: the core rounds Sweden's tax down instead of half up."""

    async def drifted(method: str, path: str, headers: list[tuple[str, str]],
                      body: bytes) -> tuple[int, Sequence[tuple[str, str]], bytes]:
        status, out_headers, raw = await send(method, path, headers, body)
        data = json.loads(raw) if raw else None
        if 200 <= status < 300 and isinstance(data, dict) and data.get("country") == "SE":
            taxable = data["subtotal"] - data.get("discount", 0)
            data["tax"] = taxable * SE_TAX_BP // 10_000
            data["total"] = taxable + data["tax"]
            raw = json.dumps(data).encode()
        return status, out_headers, raw

    return drifted


def drift_shows(body: dict[str, Any]) -> bool:
    """Whether rounding down instead of half up changes this legacy body's tax."""
    taxable = body["subtotal"] - body.get("discount", 0)
    return body.get("country") == "SE" and taxable * SE_TAX_BP % 10_000 >= 5_000


@dataclass
class Seen:
    """What the customers got from legacy, per mirrored route: for the expectations."""

    mirrored: list[tuple[str, str, int, dict[str, Any]]] = field(default_factory=list)
    orders: int = 0


class Customer:
    """Builds a cart on legacy as a customer would; every legacy answer to a request the
    shadow selects is handed to a mirror (alternating between `mirrors`, as a load balancer
    may), the way the proxy will after legacy's response went out."""

    def __init__(self, legacy: httpx.AsyncClient, mirrors: list[Mirror], unit: str,
                 seen: Seen) -> None:
        self.legacy, self.mirrors, self.unit, self.seen = legacy, mirrors, unit, seen
        self.turn = 0

    async def call(self, method: str, path: str, body: Any = None,
                   headers: Sequence[tuple[str, str]] = ()) -> httpx.Response:
        raw = b"" if body is None else json.dumps(body).encode()
        sent = [("content-type", "application/json"), ("cookie", f"checkout_session={self.unit}"),
                *headers]
        response = await self.legacy.request(method, path, content=raw, headers=sent)
        selection = select(CONFIG, SALT, self.unit, method, path)
        if selection is None:
            assert "/orders" in path, f"{method} {path} should be mirrored"
            self.seen.orders += 1
            return response
        mirror = self.mirrors[self.turn % len(self.mirrors)]
        self.turn += 1
        assert mirror.submit(MirrorJob(FUNNEL, self.unit, selection, method, sent, raw,
                                       response.status_code, response.content,
                                       list(response.headers.items())))
        data = response.json()
        self.seen.mirrored.append((self.unit, selection.route_key, response.status_code, data))
        return response


async def build_cart(customer: Customer, country: str, currency: str, skus: list[str],
                     promotion: str | None = None, between: Any = None) -> None:
    """Create, add, change, remove, read, a refused item, check out, and place the order."""

    async def step(*args: Any, **kwargs: Any) -> httpx.Response:
        response = await customer.call(*args, **kwargs)
        if between is not None:
            await between()
        return response

    cart = (await step("POST", "/carts", {"country": country, "currency": currency})).json()
    path = f"/carts/{cart['id']}"
    for n, sku in enumerate(skus):
        await step("POST", f"{path}/items", {"sku": sku, "quantity": n + 1})
    await step("POST", f"{path}/items", {"sku": "NO-SUCH-SKU", "quantity": 1})  # 422 on both
    await step("PATCH", f"{path}/items/{skus[0]}", {"quantity": 3})
    if len(skus) > 1:
        await step("DELETE", f"{path}/items/{skus[-1]}")
    await step("GET", path)
    body: dict[str, Any] = {"email": "ada@example.com",
                            "shipping_address": {**ADDRESS, "country": country}}
    if promotion is not None:
        body["promotion_code"] = promotion
    checkout = (await step("POST", f"{path}/checkout", body)).json()
    placed = await customer.call("POST", f"/checkouts/{checkout['id']}/orders", VISA,
                                 headers=[("idempotency-key", new_key())])
    assert placed.status_code == 201, placed.text


CARTS = [
    # unit, country, currency, skus, promotion
    ("u-de-1", "DE", "EUR", ["HW-PHONE-6", "AC-CASE-6"], None),
    ("u-de-2", "DE", "EUR", ["SB-CLOUD-1M", "WR-CARE-2Y", "AC-CHARGER-65"], "WELCOME10"),
    ("u-gb-1", "GB", "GBP", ["HW-LAPTOP-14"], "SAVE20"),
    ("u-us-1", "US", "USD", ["AC-CASE-6", "SB-CLOUD-1M"], None),
    ("u-se-1", "SE", "EUR", ["AC-CASE-6", "SB-CLOUD-1M", "WR-CARE-2Y"], None),
    ("u-se-2", "SE", "EUR", ["AC-CASE-6", "SB-CLOUD-1M", "WR-CARE-3Y"], "WELCOME10"),
    ("u-se-3", "SE", "SEK", ["HW-PHONE-6"], None),
]


async def run_carts(backends: Backends, mirrors: list[Mirror], seen: Seen) -> None:
    async with httpx.AsyncClient(base_url=backends.legacy.url, timeout=WAIT) as legacy:
        for unit, country, currency, skus, promotion in CARTS:
            await build_cart(Customer(legacy, mirrors, unit, seen), country, currency, skus,
                             promotion)


def mismatched_fields(summary: dict[str, Any]) -> dict[tuple[str, str], int]:
    out = {}
    for route, body in summary["funnels"][FUNNEL]["routes"].items():
        for path, stats in body["fields"].items():
            if stats["mismatches"]:
                out[(route, path)] = stats["mismatches"]
    return out


def settings() -> MirrorSettings:
    return MirrorSettings(unmapped_wait=WAIT, send_timeout=WAIT, flush_interval=3600)


async def run_one_replica(backends: Backends, send: Send,
                          store: MemoryShadowReport) -> tuple[Mirror, Seen]:
    mirror = Mirror(send, MemoryIdMap(), store, settings())
    seen = Seen()
    await mirror.start()
    try:
        await run_carts(backends, [mirror], seen)
    finally:
        await mirror.stop(timeout=WAIT)
    return mirror, seen


async def test_identical_pricing_gives_no_mismatch(
        backends: Backends, core_send: tuple[Send, CoreLog]) -> None:
    send, log = core_send
    store = MemoryShadowReport()
    mirror, seen = await run_one_replica(backends, send, store)
    assert mirror.dropped == {}
    summary = store.summary()
    funnel = summary["funnels"][FUNNEL]
    assert mismatched_fields(summary) == {}
    assert funnel["comparisons"] == len(seen.mirrored) == mirror.compared
    assert (funnel["units"]["compared"], funnel["units"]["parity"]) == (len(CARTS), 1.0)
    assert set(funnel["routes"]) == {
        "POST /carts", "POST /carts/{cart_id}/items", "PATCH /carts/{cart_id}/items/{sku}",
        "DELETE /carts/{cart_id}/items/{sku}", "GET /carts/{cart_id}",
        "POST /carts/{cart_id}/checkout"}
    # the money fields and the mapped ids were really compared
    items = funnel["routes"]["POST /carts/{cart_id}/items"]["fields"]
    assert items["items[sku].line_total"]["comparisons"] > 0
    assert items["type"]["comparisons"] == len(CARTS)  # the refused sku: 422 on both sides
    assert items["errors[].field"]["comparisons"] == len(CARTS)
    checkout = funnel["routes"]["POST /carts/{cart_id}/checkout"]["fields"]
    assert {"id", "cart_id", "discount", "tax", "total"} <= set(checkout)
    # no order ever reached the core; every request was marked and kept no customer secret
    assert seen.orders == len(CARTS)
    assert log.calls and not any("/orders" in path for _, path, _ in log.calls)
    assert all(headers["x-checkout-shadow"] == "1" and "cookie" not in headers
               for _, _, headers in log.calls)
    assert all(path.startswith("/carts") and "lg_" not in path for _, path, _ in log.calls)


async def test_a_pricing_drift_shows_on_exactly_its_fields_and_routes(
        backends: Backends, core_send: tuple[Send, CoreLog]) -> None:
    send, _ = core_send
    store = MemoryShadowReport()
    mirror, seen = await run_one_replica(backends, rounded_down_in_sweden(send), store)
    assert mirror.dropped == {}
    expected: dict[tuple[str, str], int] = {}
    affected_units = set()
    for unit, route, status, body in seen.mirrored:
        if 200 <= status < 300 and drift_shows(body):
            affected_units.add(unit)
            for path in ("tax", "total"):
                expected[(route, path)] = expected.get((route, path), 0) + 1
    # the carts were chosen so that the drift shows on every route but cart creation (an
    # empty cart has no tax), in two Swedish carts in euros and not in the one in kronor
    assert {route for route, _ in expected} == {
        "POST /carts/{cart_id}/items", "PATCH /carts/{cart_id}/items/{sku}",
        "DELETE /carts/{cart_id}/items/{sku}", "GET /carts/{cart_id}",
        "POST /carts/{cart_id}/checkout"}
    assert affected_units == {"u-se-1", "u-se-2"}
    summary = store.summary()
    assert mismatched_fields(summary) == expected
    for route, path in expected:
        stats = summary["funnels"][FUNNEL]["routes"][route]["fields"][path]
        assert stats["money"] is True and stats["noise"] is False
        example = stats["examples"][0]
        assert example["legacy"] - example["core"] == 1  # half up vs down
    # every response whose tax rounds differently differs (the counts above), and nothing
    # else does: no other field, no other route, no German, British, US or kronor cart
    units = summary["funnels"][FUNNEL]["units"]
    assert units["with_mismatch"] == len(affected_units)
    assert units["compared"] == len(CARTS)


@pytest.mark.redis
async def test_two_replicas_share_the_id_map_and_the_report_through_redis(
        backends: Backends, core_send: tuple[Send, CoreLog], redis_clean_url: str) -> None:
    send, log = core_send
    stores: list[ShadowStore] = [RedisShadowReport(redis_clean_url) for _ in range(3)]
    maps = [RedisIdMap(redis_clean_url) for _ in range(2)]
    mirrors = [Mirror(send, m, s, settings()) for m, s in zip(maps, stores, strict=False)]
    seen = Seen()
    for mirror in mirrors:
        await mirror.start()

    async def both_idle() -> None:
        for mirror in mirrors:
            await mirror.wait_idle()

    try:
        async with httpx.AsyncClient(base_url=backends.legacy.url, timeout=WAIT) as legacy:
            for unit, country, currency, skus, promotion in CARTS[:3]:
                customer = Customer(legacy, mirrors, unit, seen)
                # the cart's creation (replica a) and its first item (replica b) go out
                # together: b waits for a's pair in Redis; later steps wait for both to be
                # idle, since replicas do not order a unit's requests between them
                cart = (await customer.call("POST", "/carts",
                                            {"country": country, "currency": currency})).json()
                await customer.call("POST", f"/carts/{cart['id']}/items",
                                    {"sku": skus[0], "quantity": 1})
                await both_idle()
                await build_cart(customer, country, currency, skus, promotion,
                                 between=both_idle)
    finally:
        for mirror in mirrors:
            await mirror.stop(timeout=WAIT)
        for m in maps:
            await m.close()
    try:
        assert all(m.dropped == {} for m in mirrors)
        assert all(m.compared > 0 for m in mirrors)  # both replicas did part of the work
        pooled = stores[2].summary()  # a third reader: the CLI, say
        assert mismatched_fields(pooled) == {}
        assert pooled["funnels"][FUNNEL]["comparisons"] == len(seen.mirrored)
        assert pooled["funnels"][FUNNEL]["units"]["compared"] == 3
        assert not any("/orders" in path for _, path, _ in log.calls)
    finally:
        for store in stores:
            store.close()


def test_the_fixture_backends_are_the_real_ones(backends: Backends) -> None:
    assert httpx.get(f"{backends.legacy.url}/healthz").json()["backend"] == "legacy"
    assert httpx.get(f"{backends.core.url}/healthz").json()["backend"] == "core"
