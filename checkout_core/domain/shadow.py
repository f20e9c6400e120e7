"""Shadow traffic: requests the proxy replays to the core in the shadow of legacy.

A cart created by a shadow request (`X-Checkout-Shadow: 1`) is a shadow cart, and what is
derived from it (its items, the checkout created from it) is shadow too. Shadow and real
traffic never mix: a shadow request may only touch shadow resources and a real request
only real ones. Orders are never placed for a shadow checkout (docs/checkout_core.md,
"Shadow traffic").
"""

from __future__ import annotations

from checkout_core.domain.errors import NotShadow, ShadowResource

HEADER = "X-Checkout-Shadow"


def check_traffic(resource: str, resource_is_shadow: bool, request_is_shadow: bool) -> None:
    """Raise when a request touches a resource of the other kind of traffic."""
    if request_is_shadow and not resource_is_shadow:
        raise NotShadow(f"{resource} is not a shadow resource; a request with {HEADER}: 1 "
                        "may only touch shadow resources")
    if resource_is_shadow and not request_is_shadow:
        raise ShadowResource(f"{resource} is a shadow resource; only requests with "
                             f"{HEADER}: 1 may touch it")
