"""The log format of the proxy, the checkout core and the legacy stub: `text` or `json`.

Each service configures logging once at start-up with `logging_config` (uvicorn's
`log_config`, or `configure`): one handler on stderr for the root logger, and uvicorn's
own loggers (`uvicorn`, `uvicorn.error`, `uvicorn.access`) propagate to it, so every line of
the process has the same format.

- `text` (the default): `2025-01-31 12:00:00,123 INFO strangler.proxy: message`.
- `json`: one JSON object a line, with `timestamp` (ISO 8601, UTC, milliseconds),
  `level`, `logger`, `message`, `exception` (the traceback, when there is one), every
  `extra=` field of the call, and the context fields registered with `add_context_field`
  that have a value (the proxy's `trace_id`). uvicorn's access lines also get `client`,
  `method`, `path` and `status`.

The JSON encoding is python-json-logger's; this module only names the fields.
"""

from __future__ import annotations

import argparse
import logging
import logging.config
import os
import time
from contextvars import ContextVar
from typing import Any, ClassVar, Literal

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")
ENV = "STRANGLER_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def resolve(value: str | None = None) -> LogFormat:
    """`value`, else `$STRANGLER_LOG_FORMAT`, else `text`; ValueError for anything else."""
    chosen = (value or os.environ.get(ENV) or "text").strip().lower()
    if chosen == "text":
        return "text"
    if chosen == "json":
        return "json"
    raise ValueError(f"log format {chosen!r}: expected one of {', '.join(FORMATS)}")


class JsonFormatter(_JsonFormatter):
    """One JSON object per record: timestamp, level, logger, message, exception, extras."""

    context: ClassVar[dict[str, ContextVar[Any]]] = {}
    """Fields read from context variables at format time (`add_context_field`)."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception",
                           "stack_info": "stack"},
            # uvicorn adds an ANSI-coloured copy of some messages: not a field
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],
        )

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord,
                   message_dict: dict[str, Any]) -> None:
        log_data["timestamp"] = time.strftime(
            "%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        super().add_fields(log_data, record, message_dict)
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(
            record.args
        ) == 5:  # uvicorn's access line: client, method, path, HTTP version, status
            client, method, path, _, status = record.args
            log_data.update(client=client, method=method, path=path, status=status)
        for name, var in self.context.items():
            value = var.get()
            if value is not None and name not in log_data:
                log_data[name] = value


def add_context_field(name: str, var: ContextVar[Any]) -> None:
    """Add `name` to every JSON line logged while `var` holds a value (not None)."""
    JsonFormatter.context[name] = var


def logging_config(
    log_format: LogFormat, *, level: str = "INFO", uvicorn_level: str = "INFO",
    loggers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A `logging.config.dictConfig` (and uvicorn `log_config`): the root logger at
    `level` on stderr in `log_format`, uvicorn's loggers at `uvicorn_level` through it,
    and `loggers` (name: level) set apart."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"} if log_format == "json"
        else {"format": TEXT_FORMAT})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"strangler": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "strangler",
                                "stream": "ext://sys.stderr"}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            **{name: {"level": uvicorn_level.upper(), "handlers": [], "propagate": True}
               for name in UVICORN_LOGGERS},
            **{name: {"level": lvl.upper()} for name, lvl in (loggers or {}).items()},
        },
    }


def configure(log_format: LogFormat, *, level: str = "INFO", uvicorn_level: str = "INFO",
              loggers: dict[str, str] | None = None) -> None:
    """Apply `logging_config` to this process; Python's warnings are logged too."""
    logging.config.dictConfig(logging_config(
        log_format, level=level, uvicorn_level=uvicorn_level, loggers=loggers))
    logging.captureWarnings(True)


def add_argument(parser: argparse.ArgumentParser) -> None:
    """`--log-format text|json` (default `$STRANGLER_LOG_FORMAT`, else text), for the
    services' own command lines (`python -m checkout_core`, `python -m legacy_stub`)."""
    parser.add_argument(
        "--log-format", default=os.environ.get(ENV) or "text", metavar="{text,json}",
        help=f"log lines on stderr: text, or json (one object a line); default ${ENV}, "
        "else text")


def from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> LogFormat:
    """The format `add_argument` parsed; a usage error (exit 2) for an unknown one."""
    try:
        return resolve(args.log_format)
    except ValueError as exc:
        parser.error(str(exc))
