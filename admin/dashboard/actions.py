"""Kill and unkill from the dashboard: parse the request, then use `control.operations`.

A request body is a JSON object `{"funnel": str | null, "reason": str, "name": str}`:
`funnel` null or absent means the global switch, `reason` is required (it goes to the
audit log), `name` is optional and says who pressed the button. The actor recorded is
`dashboard`, or `dashboard:NAME`.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from control import operations
from control.decision import GLOBAL_SCOPE
from control.store import ControlStore

ACTOR = "dashboard"
MAX_REASON = 500
MAX_NAME = 64


class ApiError(Exception):
    """A dashboard API request refused; `status` and `slug` say how to answer it."""

    def __init__(self, status: int, slug: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail


@dataclass(frozen=True, slots=True)
class SwitchRequest:
    funnel: str | None
    reason: str
    actor: str

    @property
    def scope(self) -> str:
        return self.funnel or GLOBAL_SCOPE


def _invalid(detail: str) -> ApiError:
    return ApiError(422, "invalid-request", detail)


def _optional_text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(f"{key} must be a string or null")
    return value.strip() or None


def parse_switch_request(body: bytes, funnels: Collection[str]) -> SwitchRequest:
    """Validate a kill or unkill request; `funnels` are the names the rules know."""
    try:
        data = json.loads(body or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "bad-request", f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad-request", "the body must be a JSON object")
    funnel = _optional_text(data, "funnel")
    if funnel is None and data.get("funnel") is not None:  # "" must not mean "everything"
        raise _invalid("funnel must name a funnel, or be null for the global switch")
    if funnel is not None and funnel not in funnels:
        raise _invalid(f"no funnel named {funnel!r} in the active rules")
    reason = _optional_text(data, "reason")
    if reason is None:
        raise _invalid("a reason is required: it is recorded in the audit log")
    if len(reason) > MAX_REASON:
        raise _invalid(f"the reason is limited to {MAX_REASON} characters")
    name = _optional_text(data, "name")
    if name is not None and (len(name) > MAX_NAME or not name.isprintable()):
        raise _invalid(f"name must be printable and at most {MAX_NAME} characters")
    return SwitchRequest(funnel, reason, f"{ACTOR}:{name}" if name else ACTOR)


def trip(store: ControlStore, request: SwitchRequest) -> dict[str, Any]:
    """Set the kill switch (blocking: run it in a thread)."""
    switch = operations.kill(store, request.funnel, actor=request.actor, reason=request.reason)
    return {"scope": switch.scope, "killed": True, "actor": switch.actor,
            "reason": switch.reason, "at": switch.at}


def clear(store: ControlStore, request: SwitchRequest) -> dict[str, Any]:
    """Clear the kill switch (blocking: run it in a thread). A switch that is not set is
    left alone, and the answer says so (`cleared: false`); nothing is audited."""
    previous = None
    if request.scope in store.kill_switches():
        previous = operations.unkill(store, request.funnel, actor=request.actor,
                                     reason=request.reason)
    return {
        "scope": request.scope, "killed": False, "cleared": previous is not None,
        "actor": request.actor, "reason": request.reason,
        "previous": None if previous is None else {
            "actor": previous.actor, "reason": previous.reason, "at": previous.at,
            "evidence": previous.evidence,
        },
    }
