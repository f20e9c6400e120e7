"""The pure edge rules: request framing, the QA override, admin access."""

from __future__ import annotations

import asyncio

import pytest

from admin.access import bearer_ok, is_admin_path, on_port
from control.decision import Backend, Decision, Reason
from proxy.hygiene import BodyTimeout, framing_problem, timed_receive
from proxy.main import UVICORN_OPTIONS
from proxy.override import apply_override, forced_backend
from proxy.server_protocol import GuardedHttpToolsProtocol, raw_problem

CL, TE = b"content-length", b"transfer-encoding"


@pytest.mark.parametrize(("version", "headers", "problem"), [
    ("1.1", [], None),
    ("1.1", [(CL, b"10")], None),
    ("1.1", [(TE, b"chunked")], None),
    ("1.1", [(TE, b" Chunked\t")], None),
    ("1.1", [(CL, b"1"), (CL, b"1")], "more than one Content-Length"),
    ("1.1", [(CL, b"1"), (TE, b"chunked")], "both Content-Length and Transfer-Encoding"),
    ("1.1", [(TE, b"chunked"), (TE, b"chunked")], "more than one Transfer-Encoding"),
    ("1.1", [(CL, b"+1")], "invalid Content-Length"),
    ("1.1", [(CL, b"1 ")], "invalid Content-Length"),
    ("1.1", [(CL, b"")], "invalid Content-Length"),
    ("1.1", [(TE, b"xchunked")], "unsupported Transfer-Encoding (only 'chunked' is accepted)"),
    ("1.1", [(TE, b"gzip, chunked")],
     "unsupported Transfer-Encoding (only 'chunked' is accepted)"),
    ("1.0", [(TE, b"chunked")], "Transfer-Encoding in an HTTP/1.0 request"),
    ("1.1", [(b"x-a", b"1\r\nx-b: 2")], "a header value contains CR, LF or NUL"),
    ("1.1", [(b"x-a", b"1\x00")], "a header value contains CR, LF or NUL"),
])
def test_framing_problem(version: str, headers: list[tuple[bytes, bytes]],
                         problem: str | None) -> None:
    assert framing_problem(version, headers) == problem


SECRET = b"s3cret-token"
RULE = Decision(Backend.LEGACY, Reason.RULE, "7", "de-none", 42)


@pytest.mark.parametrize(("headers", "secret", "forced"), [
    ([(b"x-checkout-force", b"core"), (b"x-checkout-force-token", SECRET)], SECRET,
     Backend.CORE),
    ([(b"x-checkout-force", b" Legacy "), (b"x-checkout-force-token", SECRET)], SECRET,
     Backend.LEGACY),
    ([(b"x-checkout-force", b"core"), (b"x-checkout-force-token", SECRET)], None, None),
    ([(b"x-checkout-force", b"core"), (b"x-checkout-force-token", b"nope")], SECRET, None),
    ([(b"x-checkout-force", b"core")], SECRET, None),
    ([(b"x-checkout-force-token", SECRET)], SECRET, None),
    ([(b"x-checkout-force", b"mars"), (b"x-checkout-force-token", SECRET)], SECRET, None),
    ([(b"x-checkout-force", b"\xff"), (b"x-checkout-force-token", SECRET)], SECRET, None),
])
def test_forced_backend(headers: list[tuple[bytes, bytes]], secret: bytes | None,
                        forced: Backend | None) -> None:
    assert forced_backend(headers, secret) is forced


@pytest.mark.parametrize(("decision", "forced", "expected"), [
    (RULE, Backend.CORE, Decision(Backend.CORE, Reason.RULE, "7", "qa-override")),
    (Decision(Backend.CORE, Reason.STICKY, "7"), Backend.LEGACY,
     Decision(Backend.LEGACY, Reason.RULE, "7", "qa-override")),
    (Decision(Backend.LEGACY, Reason.DEFAULT, "7"), Backend.CORE,
     Decision(Backend.CORE, Reason.RULE, "7", "qa-override")),
    (Decision(Backend.LEGACY, Reason.KILL_SWITCH, "7"), Backend.CORE,
     Decision(Backend.LEGACY, Reason.KILL_SWITCH, "7")),
    (Decision(Backend.LEGACY, Reason.OWNER, "7"), Backend.CORE,
     Decision(Backend.LEGACY, Reason.OWNER, "7")),
    (Decision(Backend.LEGACY, Reason.ERROR, "7"), Backend.CORE,
     Decision(Backend.LEGACY, Reason.ERROR, "7")),
    (RULE, None, RULE),
])
def test_apply_override(decision: Decision, forced: Backend | None, expected: Decision) -> None:
    assert apply_override(decision, forced) == expected


@pytest.mark.parametrize(("path", "admin"), [
    ("/metrics", True), ("/_strangler/healthz", True), ("/_strangler", True),
    ("//metrics", True), ("/x/../metrics", True), ("/_strangler/./state", True),
    ("/metrics/", False), ("/metricsx", False), ("/carts", False), ("/warranties/metrics", False),
])
def test_is_admin_path(path: str, admin: bool) -> None:
    assert is_admin_path(path) is admin


@pytest.mark.parametrize(("headers", "token", "ok"), [
    ([], None, True),
    ([], b"t", False),
    ([(b"authorization", b"Bearer t")], b"t", True),
    ([(b"authorization", b"bearer t ")], b"t", True),
    ([(b"authorization", b"Bearer u")], b"t", False),
    ([(b"authorization", b"Basic t")], b"t", False),
])
def test_bearer_ok(headers: list[tuple[bytes, bytes]], token: bytes | None, ok: bool) -> None:
    assert bearer_ok(headers, token) is ok


def test_on_port() -> None:
    assert on_port({"server": ("127.0.0.1", 9000)}, 9000)
    assert not on_port({"server": ("127.0.0.1", 8000)}, 9000)
    assert not on_port({"server": None}, 9000)
    assert not on_port({"server": ("127.0.0.1", 9000)}, None)


async def test_timed_receive_enforces_idle_and_total_deadlines() -> None:
    async def slow() -> dict[str, object]:
        await asyncio.sleep(0.2)
        return {"type": "http.request", "body": b"x", "more_body": True}

    with pytest.raises(BodyTimeout):
        await timed_receive(slow, idle=0.05, total=10)()
    receive = timed_receive(slow, idle=1, total=0.5)
    await receive()
    await receive()
    with pytest.raises(BodyTimeout):
        await receive()


def test_the_proxy_runs_on_the_guarded_protocol() -> None:
    assert UVICORN_OPTIONS["http"] is GuardedHttpToolsProtocol
    response = raw_problem(431, "header-too-large", "too large")
    assert response.startswith(b"HTTP/1.1 431 ") and b"connection: close" in response
