"""Schemathesis against both backends over real HTTP: requests generated from the OpenAPI
document each backend serves at /openapi.yaml (valid and invalid ones, on random ids and on
real ones) never get a 5xx. Faults are off; examples are bounded and derandomized."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.generation.case import Case

from tests.support.checkout_contract import VISA, Backend, new_key, running_backend

EXAMPLES = 120


@pytest.fixture(scope="module", params=["legacy", "core"])
def backend(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    name: str = request.param
    with running_backend(name, tmp_path_factory.mktemp(f"fuzz-{name}")) as client:
        yield client


def real_ids(backend: Backend) -> dict[str, str]:
    """Ids that exist, so that generated requests get past the 404s."""
    cart = backend.cart(items=[("HW-PHONE-6", 1)])
    checkout = backend.checkout()
    order = backend.order(backend.checkout()["id"])
    assert order.status_code == 201, order.text
    return {"cart_id": cart["id"], "checkout_id": checkout["id"],
            "order_id": order.json()["id"], "sku": "HW-PHONE-6"}


def strategies(schema: schemathesis.BaseSchema, ids: dict[str, str]) -> st.SearchStrategy[Case]:
    options = []
    for result in schema.get_all_operations():
        operation = result.ok()
        names = {p.name for p in operation.path_parameters}
        known = {name: ids[name] for name in names if name in ids}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            options.append(operation.as_strategy(mode))
            if known:
                options.append(operation.as_strategy(mode, path_parameters=known))
    return st.one_of(options)


def test_no_generated_request_gets_a_server_error(backend: Backend) -> None:
    schema = schemathesis.openapi.from_url(backend.url + "/openapi.yaml")  # as each serves it
    cases = strategies(schema, real_ids(backend))
    failures: list[str] = []

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def call(case: Case) -> None:
        headers = {"Idempotency-Key": new_key()} if case.path.endswith("/orders") and (
            case.method == "POST" and not (case.headers or {}).get("Idempotency-Key")
        ) else None
        response = case.call(base_url=backend.url, headers=headers, timeout=10)
        if response.status_code >= 500:
            failures.append(f"{case.as_curl_command()} -> {response.status_code}: "
                            f"{response.text[:300]}")

    call()
    assert not failures, "\n".join(failures[:10])


def test_the_served_document_describes_every_contract_route(backend: Backend) -> None:
    schema = schemathesis.openapi.from_url(backend.url + "/openapi.yaml")
    labels = {result.ok().label for result in schema.get_all_operations()}
    assert {"POST /carts", "GET /carts/{cart_id}", "POST /carts/{cart_id}/items",
            "PATCH /carts/{cart_id}/items/{sku}", "DELETE /carts/{cart_id}/items/{sku}",
            "POST /carts/{cart_id}/checkout", "POST /checkouts/{checkout_id}/orders",
            "GET /orders/{order_id}", "GET /healthz"} <= labels
    assert VISA  # the fixtures above place real orders with it
