"""Prometheus metrics, in a registry per app instance (never the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from checkout_core.domain.checkout import Order
from checkout_core.service.ports import ShadowExpired


class CoreMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.orders = Counter("checkout_core_orders_placed", "Orders placed", ["currency"],
                              registry=r)
        self.order_value = Counter("checkout_core_order_value_minor",
                                   "Value of placed orders in minor units", ["currency"],
                                   registry=r)
        self.payments = Counter("checkout_core_payment_outcomes",
                                "Outcomes of order placements at the payment step",
                                ["outcome"], registry=r)
        self.gateway_calls = Counter("checkout_core_gateway_calls",
                                     "Payment gateway calls", ["operation", "result"], registry=r)
        self.events_published = Counter("checkout_core_events_published",
                                        "Outbox events published to the stream", registry=r)
        self.consumer_messages = Counter("checkout_core_consumer_messages",
                                         "Messages handled by consumers", ["group", "outcome"],
                                         registry=r)
        self.outbox_lag = Gauge("checkout_core_outbox_lag_events",
                                "Outbox events not yet published", registry=r)
        self.outbox_age = Gauge("checkout_core_outbox_oldest_unpublished_seconds",
                                "Age of the oldest unpublished outbox event", registry=r)
        self.consumer_lag = Gauge("checkout_core_consumer_lag_messages",
                                  "Stream messages a consumer group has not acknowledged",
                                  ["group"], registry=r)
        self.dlq_size = Gauge("checkout_core_dlq_size", "Dead letters waiting", registry=r)
        self.shadow_requests = Counter("checkout_core_shadow_requests",
                                       "Shadow requests (X-Checkout-Shadow: 1) received",
                                       ["route"], registry=r)
        self.shadow_expired = Counter("checkout_core_shadow_expired",
                                      "Shadow resources deleted by the shadow expiry",
                                      ["resource"], registry=r)
        for resource in ("cart", "checkout"):
            self.shadow_expired.labels(resource)

    def order_placed(self, order: Order) -> None:
        self.orders.labels(order.currency).inc()
        self.order_value.labels(order.currency).inc(order.total)

    def payment_outcome(self, outcome: str) -> None:
        self.payments.labels(outcome).inc()

    def gateway_call(self, operation: str, result: str) -> None:
        self.gateway_calls.labels(operation, result).inc()

    def published(self, count: int) -> None:
        self.events_published.inc(count)

    def consumer_outcome(self, group: str, outcome: str) -> None:
        self.consumer_messages.labels(group, outcome).inc()

    def shadow_request(self, route: str) -> None:
        self.shadow_requests.labels(route).inc()

    def expired(self, expired: ShadowExpired) -> None:
        self.shadow_expired.labels("cart").inc(expired.carts)
        self.shadow_expired.labels("checkout").inc(expired.checkouts)

    def render(self) -> bytes:
        return generate_latest(self.registry)
