"""The trace id of the request being handled, for log lines.

Set per request by whatever knows it (the OpenTelemetry wrapper when tracing is on, the
access log's wrapper from an incoming `traceparent` otherwise); read by log formatters and
the access log. A ContextVar: each request's task sees its own.
"""

from __future__ import annotations

from contextvars import ContextVar

CURRENT_TRACE_ID: ContextVar[str | None] = ContextVar("strangler_trace_id", default=None)
