"""A fake downstream order system that can fail: the order sync consumer's counterpart.

`POST /orders` with an `Idempotency-Key` records the order once per key and counts every
delivery (a repeated key answers 200 and is not recorded again). Faults: a random failure
rate, the next N requests failing with 503, keys rejected with 422 (poison), and a stall:
delivery number N is recorded and then its response hangs (to kill a consumer mid-push).
`GET /orders` shows what arrived. Run alone: `python -m checkout_core.downstream_fake --port N`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class ReceivedOrder:
    idempotency_key: str
    order: dict[str, Any]
    deliveries: int
    received_at: str

    def summary(self) -> dict[str, Any]:
        return {
            "idempotency_key": self.idempotency_key, "order_id": self.order.get("order_id"),
            "deliveries": self.deliveries, "received_at": self.received_at,
        }


@dataclass
class DownstreamState:
    """What arrived, and the faults to inject. Safe to read from other threads."""

    failure_rate: float = 0.0
    fail_next: int = 0
    reject_keys: set[str] = field(default_factory=set)
    stall_on_delivery: int | None = None
    stall_seconds: float = 30.0
    seed: int | None = None
    orders: dict[str, ReceivedOrder] = field(default_factory=dict)
    requests: int = 0
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def receive(self, key: str, order: dict[str, Any]) -> tuple[int, int]:
        """(status, request number) for one delivery."""
        with self.lock:
            self.requests += 1
            number = self.requests
            if key in self.reject_keys:
                return 422, number
            if self.fail_next > 0:
                self.fail_next -= 1
                return 503, number
            if self.rng.random() < self.failure_rate:
                return 503, number
            known = self.orders.get(key)
            if known is not None:
                known.deliveries += 1
                return 200, number
            now = datetime.now(UTC).isoformat()
            self.orders[key] = ReceivedOrder(key, order, 1, now)
            return 201, number

    def snapshot(self) -> dict[str, ReceivedOrder]:
        with self.lock:
            return dict(self.orders)

    def release(self) -> None:
        """Let a stalled response finish."""
        self.released.set()

    async def stall(self, number: int) -> None:
        if number != self.stall_on_delivery:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stall_seconds
        while not self.released.is_set() and loop.time() < deadline:
            await asyncio.sleep(0.01)


def _problem(status: int, detail: str) -> JSONResponse:
    body = {"type": "about:blank", "title": "Rejected", "status": status, "detail": detail}
    return JSONResponse(body, status, media_type="application/problem+json")


async def _receive(request: Request) -> Response:
    state: DownstreamState = request.app.state.downstream
    key = request.headers.get("idempotency-key")
    if not key:
        return _problem(400, "Idempotency-Key header required")
    try:
        order = await request.json()
    except ValueError:
        return _problem(400, "body is not JSON")
    if not isinstance(order, dict):
        return _problem(400, "body must be a JSON object")
    status, number = state.receive(key, order)
    await state.stall(number)
    if status >= 400:
        return _problem(status, "downstream refused the order")
    return JSONResponse({"idempotency_key": key, "duplicate": status == 200}, status)


async def _list(request: Request) -> Response:
    state: DownstreamState = request.app.state.downstream
    orders = state.snapshot()
    return JSONResponse({
        "orders": [o.summary() for o in orders.values()],
        "unique_orders": len(orders),
        "deliveries": sum(o.deliveries for o in orders.values()),
        "requests": state.requests,
    })


async def _faults(request: Request) -> Response:
    state: DownstreamState = request.app.state.downstream
    try:
        body = await request.json()
    except ValueError:
        return _problem(400, "body is not JSON")
    with state.lock:
        state.fail_next = int(body.get("fail_next", state.fail_next))
        state.failure_rate = float(body.get("failure_rate", state.failure_rate))
        state.reject_keys = set(body.get("reject_keys", state.reject_keys))
    return JSONResponse({"fail_next": state.fail_next, "failure_rate": state.failure_rate,
                         "reject_keys": sorted(state.reject_keys)})


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok", "backend": "downstream-fake"})


def create_app(
    state: DownstreamState | None = None, *, failure_rate: float = 0.0, seed: int | None = None
) -> Starlette:
    app = Starlette(routes=[
        Route("/orders", _receive, methods=["POST"]),
        Route("/orders", _list, methods=["GET"]),
        Route("/faults", _faults, methods=["POST"]),
        Route("/healthz", _healthz, methods=["GET"]),
    ])
    app.state.downstream = state or DownstreamState(failure_rate=failure_rate, seed=seed)
    return app


def main() -> None:  # pragma: no cover - a demo entry point
    import uvicorn

    parser = argparse.ArgumentParser(description="Fake downstream order system")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--failure-rate", type=float, default=0.0)
    args = parser.parse_args()
    uvicorn.run(create_app(failure_rate=args.failure_rate), host=args.host, port=args.port)


if __name__ == "__main__":  # pragma: no cover
    main()
