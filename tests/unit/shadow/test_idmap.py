"""The per-unit id map and the pure helpers that find, record and rewrite ids."""

from __future__ import annotations

import json

from shadow.idmap import (
    MemoryIdMap,
    Rewritten,
    Unmapped,
    body_ids,
    derive_idempotency_key,
    id_pairs,
    request_ids,
    rewrite_request,
)
from shadow.routes import BY_KEY


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


ADD_ITEM = BY_KEY["POST /carts/{cart_id}/items"]
CHANGE_ITEM = BY_KEY["PATCH /carts/{cart_id}/items/{sku}"]
CREATE_CART = BY_KEY["POST /carts"]


async def test_memory_map_records_and_returns_a_units_pairs() -> None:
    ids = MemoryIdMap()
    assert await ids.get("u1") == {}
    await ids.add("u1", {"lg_cart_1": "co_cart_1"})
    await ids.add("u1", {"lg_chk_1": "co_chk_1"})
    assert await ids.get("u1") == {"lg_cart_1": "co_cart_1", "lg_chk_1": "co_chk_1"}
    assert await ids.get("u2") == {}


async def test_an_id_already_mapped_keeps_its_first_core_id() -> None:
    ids = MemoryIdMap()
    await ids.add("u", {"lg_1": "co_1"})
    await ids.add("u", {"lg_1": "co_2"})
    assert await ids.get("u") == {"lg_1": "co_1"}


async def test_get_returns_a_copy() -> None:
    ids = MemoryIdMap()
    await ids.add("u", {"lg_1": "co_1"})
    got = await ids.get("u")
    got["lg_2"] = "co_2"
    assert await ids.get("u") == {"lg_1": "co_1"}


async def test_a_unit_is_forgotten_ttl_seconds_after_its_first_pair() -> None:
    clock = Clock()
    ids = MemoryIdMap(ttl=60, clock=clock)
    await ids.add("u", {"lg_1": "co_1"})
    clock.now += 59
    await ids.add("u", {"lg_2": "co_2"})  # does not extend the deadline
    assert await ids.get("u") == {"lg_1": "co_1", "lg_2": "co_2"}
    clock.now += 1
    assert await ids.get("u") == {}
    assert len(ids) == 0


async def test_the_least_recently_used_units_go_first_beyond_the_bound() -> None:
    ids = MemoryIdMap(max_units=2)
    await ids.add("a", {"lg_a": "co_a"})
    await ids.add("b", {"lg_b": "co_b"})
    assert await ids.get("a")  # a is now the most recent
    await ids.add("c", {"lg_c": "co_c"})
    assert len(ids) == 2
    assert await ids.get("b") == {}
    assert await ids.get("a") == {"lg_a": "co_a"}


async def test_ids_per_unit_are_bounded() -> None:
    ids = MemoryIdMap(max_ids_per_unit=3)
    await ids.add("u", {f"lg_{i}": f"co_{i}" for i in range(10)})
    assert len(await ids.get("u")) == 3


async def test_empty_pairs_create_no_entry() -> None:
    ids = MemoryIdMap()
    await ids.add("u", {})
    assert len(ids) == 0


# -- pure helpers ------------------------------------------------------------------------------


def test_id_pairs_pair_the_ids_in_the_same_places() -> None:
    legacy = {"id": "lg_chk_1", "cart_id": "lg_cart_1", "items": [{"sku": "A", "quantity": 1}],
              "payment": {"id": "pay_1"}}
    core = {"id": "co_chk_1", "cart_id": "co_cart_1", "items": [{"sku": "A", "quantity": 1}],
            "payment": {"id": "pay_2"}}
    assert id_pairs(legacy, core) == {"lg_chk_1": "co_chk_1", "lg_cart_1": "co_cart_1"}


def test_id_pairs_take_only_core_ids_on_the_core_side() -> None:
    assert id_pairs({"id": "lg_1"}, {"id": "x_1"}) == {}
    assert id_pairs({"id": "co_1"}, {"id": "co_2"}) == {}
    assert id_pairs({"id": "lg_1"}, {"id": None}) == {}
    assert id_pairs([{"id": "lg_1"}], [{"id": "co_1"}]) == {"lg_1": "co_1"}
    assert id_pairs({"a": 1}, "not an object") == {}


def test_body_ids_finds_id_fields_at_any_depth() -> None:
    assert body_ids({"id": "a", "x": {"cart_id": "b", "ids": "no"}, "l": [{"order_id": "c"}],
                     "n": {"id": 5}}) == ["a", "b", "c"]


def test_request_ids_are_the_path_ids_and_the_body_ids() -> None:
    params = {"cart_id": "lg_cart_1", "sku": "HW-PHONE-6"}
    assert request_ids(CHANGE_ITEM, params, b'{"quantity": 2}') == ["lg_cart_1"]
    assert request_ids(CREATE_CART, {}, b'{"country": "DE"}') == []
    assert request_ids(CREATE_CART, {}, b'{"source_cart_id": "lg_cart_0"}') == ["lg_cart_0"]


def test_rewrite_replaces_path_ids_and_keeps_a_body_without_ids_byte_for_byte() -> None:
    body = b'{"sku":  "HW-PHONE-6", "quantity": 1}'
    out = rewrite_request(ADD_ITEM, {"cart_id": "lg_cart_1"}, body, {"lg_cart_1": "co_cart_9"})
    assert out == Rewritten("/carts/co_cart_9/items", body)
    out = rewrite_request(CHANGE_ITEM, {"cart_id": "lg_cart_1", "sku": "HW-PHONE-6"},
                          b'{"quantity": 3}', {"lg_cart_1": "co_cart_9"})
    assert out == Rewritten("/carts/co_cart_9/items/HW-PHONE-6", b'{"quantity": 3}')


def test_rewrite_replaces_body_ids() -> None:
    out = rewrite_request(CREATE_CART, {}, b'{"country": "DE", "source_cart_id": "lg_1"}',
                          {"lg_1": "co_1"})
    assert isinstance(out, Rewritten)
    assert json.loads(out.body) == {"country": "DE", "source_cart_id": "co_1"}


def test_an_unknown_id_cannot_be_mapped_yet() -> None:
    out = rewrite_request(ADD_ITEM, {"cart_id": "lg_cart_1"}, b"{}", {"lg_other": "co_x"})
    assert out == Unmapped(("lg_cart_1",))
    out = rewrite_request(CREATE_CART, {}, b'{"cart_id": "co_cart_1"}', {})
    assert out == Unmapped(("co_cart_1",))  # a core id in a body: never mirrored


def test_derived_idempotency_keys_are_deterministic_and_never_the_customers() -> None:
    key = "order-123"
    derived = derive_idempotency_key(key)
    assert derived == derive_idempotency_key(key)
    assert derived != key and key not in derived
    assert derived != derive_idempotency_key("order-124")
    assert derived.startswith("shadow-") and len(derived) <= 255
    assert all(" " <= c <= "~" for c in derived)
