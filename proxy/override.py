"""The QA override: force a request to the core or to legacy, only with the shared secret.

`X-Checkout-Force: core|legacy` with `X-Checkout-Force-Token: <STRANGLER_QA_OVERRIDE_SECRET>`
(compared in constant time). Without a configured secret, or with a wrong or missing token,
the headers are ignored; they are never forwarded (see `proxy.headers`).

The override is a RULE-level decision (`RULE; rule=qa-override`): it replaces the sticky,
rule and default steps, and yields to the kill switch (legacy wins), to the owner of a named
id (only the owner can serve it) and to the fail-safe ERROR decisions.
"""

from __future__ import annotations

import hmac

from control.decision import Backend, Decision, Reason

FORCE_HEADER = b"x-checkout-force"
FORCE_TOKEN_HEADER = b"x-checkout-force-token"
OVERRIDE_RULE_ID = "qa-override"

_OVERRIDABLE = frozenset({Reason.STICKY, Reason.RULE, Reason.DEFAULT})


def forced_backend(headers: list[tuple[bytes, bytes]], secret: bytes | None) -> Backend | None:
    """The backend a request forces with a valid token, else None."""
    if not secret:
        return None
    force = token = None
    for name, value in headers:
        if name == FORCE_HEADER:
            force = value
        elif name == FORCE_TOKEN_HEADER:
            token = value
    if force is None or token is None or not hmac.compare_digest(token.strip(), secret):
        return None
    try:
        return Backend(force.strip().lower().decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None


def apply_override(decision: Decision, forced: Backend | None) -> Decision:
    if forced is None or decision.reason not in _OVERRIDABLE:
        return decision
    return Decision(forced, Reason.RULE, decision.rules_version, OVERRIDE_RULE_ID)
