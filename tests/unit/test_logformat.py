"""The shared log format (`logformat`): JSON lines with the promised keys, the text format,
the choice of format and uvicorn's loggers routed through the same handler."""

from __future__ import annotations

import argparse
import io
import json
import logging
import logging.config
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import pytest

import logformat


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """dictConfig changes the process's loggers: put back what pytest had."""
    root = logging.getLogger()
    saved = (root.level, root.handlers[:])
    others = {name: (lg.level, lg.handlers[:], lg.propagate) for name in logformat.UVICORN_LOGGERS
              for lg in [logging.getLogger(name)]}
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        for name, (level, handlers, propagate) in others.items():
            lg = logging.getLogger(name)
            lg.setLevel(level)
            lg.handlers[:] = handlers
            lg.propagate = propagate


def format_json(record: logging.LogRecord) -> dict[str, Any]:
    line = logformat.JsonFormatter().format(record)
    assert "\n" not in line
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def record(name: str = "strangler.proxy", msg: str = "hello %s", args: Any = ("world",),
           level: int = logging.WARNING, **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_a_json_line_has_timestamp_level_logger_message_and_the_extras() -> None:
    rec = record(funnel="warranties", status=201)
    line = format_json(rec)
    assert line["level"] == "WARNING" and line["logger"] == "strangler.proxy"
    assert line["message"] == "hello world"
    assert (line["funnel"], line["status"]) == ("warranties", 201)
    stamp = datetime.strptime(line["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs(stamp.timestamp() - rec.created) < 0.002  # UTC, milliseconds
    assert not {"args", "msg", "levelno", "pathname", "exception"} & set(line)


def test_an_exception_is_one_field_of_the_same_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("strangler.proxy", logging.ERROR, __file__, 1, "failed", (),
                                sys.exc_info())
    line = format_json(rec)
    assert line["message"] == "failed"
    assert "Traceback" in line["exception"] and "ValueError: boom" in line["exception"]


def test_uvicorn_lines_lose_their_colours_and_access_lines_gain_fields() -> None:
    started = format_json(record("uvicorn.error", "Uvicorn running on %s", ("http://x",),
                                 logging.INFO, color_message="\x1b[1mhttp://x\x1b[0m"))
    assert "color_message" not in started and started["message"] == "Uvicorn running on http://x"
    access = format_json(record("uvicorn.access", '%s - "%s %s HTTP/%s" %d',
                                ("127.0.0.1:5000", "POST", "/carts", "1.1", 201), logging.INFO))
    assert access["message"] == '127.0.0.1:5000 - "POST /carts HTTP/1.1" 201'
    assert (access["client"], access["method"], access["path"], access["status"]) == (
        "127.0.0.1:5000", "POST", "/carts", 201)


def test_a_context_field_is_added_while_it_has_a_value() -> None:
    var: ContextVar[str | None] = ContextVar("test_request_id", default=None)
    logformat.add_context_field("test_request_id", var)
    try:
        assert "test_request_id" not in format_json(record())
        token = var.set("r-1")
        assert format_json(record())["test_request_id"] == "r-1"
        # a field given by the call itself wins
        assert format_json(record(test_request_id="mine"))["test_request_id"] == "mine"
        var.reset(token)
    finally:
        del logformat.JsonFormatter.context["test_request_id"]


@pytest.mark.parametrize(("given", "env", "expected"), [
    (None, None, "text"), (None, "json", "json"), ("text", "json", "text"),
    ("JSON", None, "json"), (None, "", "text"),
])
def test_the_format_is_the_argument_then_the_environment_then_text(
    monkeypatch: pytest.MonkeyPatch, given: str | None, env: str | None, expected: str,
) -> None:
    if env is None:
        monkeypatch.delenv(logformat.ENV, raising=False)
    else:
        monkeypatch.setenv(logformat.ENV, env)
    assert logformat.resolve(given) == expected


def test_an_unknown_format_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="expected one of text, json"):
        logformat.resolve("xml")
    monkeypatch.setenv(logformat.ENV, "yaml")
    parser = argparse.ArgumentParser()
    logformat.add_argument(parser)
    with pytest.raises(SystemExit) as exit_:
        logformat.from_args(parser, parser.parse_args([]))
    assert exit_.value.code == 2
    assert logformat.from_args(parser, parser.parse_args(["--log-format", "json"])) == "json"


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_uvicorn_and_the_services_loggers_share_one_handler(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch, fmt: logformat.LogFormat,
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)  # resolved by dictConfig (ext://sys.stderr)
    logformat.configure(fmt, level="WARNING", uvicorn_level="INFO",
                        loggers={"strangler.cli": "INFO"})
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    logging.getLogger("strangler.proxy").info("not shown: below the root's level")
    logging.getLogger("strangler.proxy").warning("control store unavailable")
    logging.getLogger("strangler.cli").info("proxy on http://x")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3, lines
    if fmt == "json":
        parsed = [json.loads(line) for line in lines]
        assert [p["logger"] for p in parsed] == ["uvicorn.error", "strangler.proxy",
                                                 "strangler.cli"]
    else:
        assert lines[0].endswith(" INFO uvicorn.error: Started server process [42]")
        assert lines[1].endswith(" WARNING strangler.proxy: control store unavailable")
