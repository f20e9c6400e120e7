"""`python -m tests.support.crashing_core --port P`: the checkout core with a crash point.

The core has no fault-injection hook of its own, so this launcher injects one through the
core's own seams (no monkeypatching of its modules):

- `CHECKOUT_CORE_CRASH_AT=after_payment`: the payment gateway port is wrapped; the process
  dies (`os._exit(137)`) right after the gateway authorized the Nth charge (committed to the
  gateway's ledger file, which the restarted core shares), before the order is committed;
- `CHECKOUT_CORE_CRASH_AT=after_commit`: the order observer is wrapped; the process dies
  right after the Nth order, its recorded outcome and its outbox events were committed,
  before the relay could publish them (and before the HTTP response).

`CHECKOUT_CORE_CRASH_AFTER=N` (default 1) picks the Nth; `CHECKOUT_CORE_CRASH_REPORT=PATH`
receives one JSON line naming what was in hand when the process died. Every other setting is
the core's own (`CHECKOUT_CORE_*`). This is the interface a native hook in checkout_core
should offer; the day it does, tests can run `python -m checkout_core` instead.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import uvicorn

from checkout_core.adapters.fake_gateway import FakeGateway
from checkout_core.bootstrap import build_gateway
from checkout_core.config import CoreSettings
from checkout_core.domain.checkout import Order
from checkout_core.main import create_app
from checkout_core.service.ports import ChargeRequest, PaymentResult

EXIT_CODE = 137


def _die(report: str | None, what: dict[str, Any]) -> None:
    if report:
        with open(report, "a", encoding="utf-8") as out:
            out.write(json.dumps(what) + "\n")
            out.flush()
            os.fsync(out.fileno())
    os._exit(EXIT_CODE)


class CrashAfterPayment(FakeGateway):
    """The configured fake gateway (on its ledger file); dies after the Nth authorized charge,
    once the ledger has committed it."""

    def __init__(self, inner: FakeGateway, after: int, report: str | None) -> None:
        super().__init__(inner.config, inner.rng, inner.sleep, inner.ledger)
        self.after = after
        self.report = report
        self.authorized_count = 0

    async def authorize(self, request: ChargeRequest) -> PaymentResult:
        result = await super().authorize(request)
        if result.status == "authorized":
            self.authorized_count += 1
            if self.authorized_count == self.after:
                _die(self.report, {"crash_at": "after_payment",
                                   "gateway_key": request.idempotency_key})
        return result


class CrashAfterCommit:
    """An order observer that dies after the Nth placed (committed) order."""

    def __init__(self, inner: Any, after: int, report: str | None) -> None:
        self.inner = inner
        self.after = after
        self.report = report
        self.placed = 0

    def order_placed(self, order: Order) -> None:
        self.inner.order_placed(order)
        self.placed += 1
        if self.placed == self.after:
            _die(self.report, {"crash_at": "after_commit", "order_id": order.id,
                               "checkout_id": order.checkout_id})

    def payment_outcome(self, outcome: str) -> None:
        self.inner.payment_outcome(outcome)


def build(settings: CoreSettings, crash_at: str | None, after: int, report: str | None) -> Any:
    gateway = build_gateway(settings)
    if crash_at == "after_payment":
        gateway = CrashAfterPayment(gateway, after, report)
    app = create_app(settings, gateway=gateway)
    if crash_at == "after_commit":
        orders = app.state.core.orders
        orders.observer = CrashAfterCommit(orders.observer, after, report)
    elif crash_at not in (None, "", "after_payment"):
        raise SystemExit(f"unknown CHECKOUT_CORE_CRASH_AT={crash_at!r}")
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = CoreSettings(host=args.host, port=args.port)
    app = build(settings, os.environ.get("CHECKOUT_CORE_CRASH_AT"),
                int(os.environ.get("CHECKOUT_CORE_CRASH_AFTER", "1")),
                os.environ.get("CHECKOUT_CORE_CRASH_REPORT"))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
