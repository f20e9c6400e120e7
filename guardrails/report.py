"""Where the guardrail monitor's latest report lives in the control store.

A light module on purpose: `strangler status`, `strangler guard status` and the dashboard
read the report without loading the monitor, the telemetry stores or Redis.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

REPORT_KEY = "guard:report"


class MetaStore(Protocol):
    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...


def read_report(store: MetaStore) -> dict[str, Any]:
    """The last report any replica's monitor stored, or {} when none has yet."""
    raw = store.get_meta(REPORT_KEY)
    report: dict[str, Any] = json.loads(raw) if raw else {}
    return report


def store_report(store: MetaStore, report: dict[str, Any]) -> None:
    store.set_meta(REPORT_KEY, json.dumps(report, default=str))
