"""Alerts of the guardrail monitor: a JSON POST to a webhook (`STRANGLER_GUARD_WEBHOOK_URL`)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("strangler.guardrails")


class WebhookAlert:
    """POSTs each payload as JSON; a failure is logged, never raised (the trip stands)."""

    def __init__(self, url: str, timeout: float = 3.0) -> None:
        self.url = url
        self.timeout = timeout

    def __call__(self, payload: dict[str, Any]) -> None:
        import httpx  # here, not at the top: httpx loads rich and pygments (~8 MB)

        try:
            httpx.post(self.url, json=payload, timeout=self.timeout).raise_for_status()
        except httpx.HTTPError as exc:
            log.error("guardrail webhook %s failed: %s", self.url, exc)
