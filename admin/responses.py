"""The admin surface's response bodies: JSON and RFC 9457 problem details.

Problems use `proxy.problems.problem_body`, so the admin surface and the data plane write
the same format.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from proxy.problems import problem_body

JSON_HEADERS = {"cache-control": "no-store", "x-content-type-options": "nosniff"}


def _finite(value: Any) -> Any:
    """`value` with every infinite or NaN float replaced by None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def json_bytes(data: Any) -> bytes:
    try:
        return json.dumps(data, default=str, allow_nan=False).encode()
    except ValueError:  # an infinite bound in a guardrail report, say
        return json.dumps(_finite(data), default=str, allow_nan=False).encode()


def json_response(data: Any, status: int = 200) -> Response:
    """`data` as JSON, never cached."""
    return Response(json_bytes(data), status, JSON_HEADERS, media_type="application/json")


def problem_response(
    status: int, slug: str, detail: str, instance: str,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(problem_body(status, slug, detail, instance), status, headers,
                    media_type="application/problem+json")
