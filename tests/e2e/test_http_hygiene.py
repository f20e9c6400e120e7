"""HTTP hygiene through the real proxy, as `strangler serve` runs it (uvicorn, httptools,
the proxy's protocol limits), driven by hand-made requests on raw sockets.

The backends are RecordingBackends: they record a request the moment its head arrives,
so "nothing was forwarded" means the upstream did not even see a request line.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import unquote

import httpx
import pytest

from tests.integration.conftest import RULES
from tests.support.processes import (
    ProxyProcess,
    RecordingBackend,
    raw_exchange,
    status_of,
    strangler_serve,
)
from tests.support.servers import serve

pytestmark = pytest.mark.e2e

LIMITS = {
    "STRANGLER_MAX_HEADER_BYTES": "8192",
    "STRANGLER_HEADER_TIMEOUT": "1",
    "STRANGLER_BODY_IDLE_TIMEOUT": "1",
    "STRANGLER_BODY_TIMEOUT": "2",
    "STRANGLER_MAX_BODY_BYTES": "65536",
}
HEADER_TIMEOUT, BODY_TIMEOUT = 1.0, 2.0


@dataclass
class Edge:
    proxy: ProxyProcess
    core: RecordingBackend
    legacy: RecordingBackend

    def arrivals(self) -> int:
        return len(self.core.arrived) + len(self.legacy.arrived)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("hygiene")
    rules = tmp / "rules.yaml"
    rules.write_text(RULES)
    core, legacy = RecordingBackend("core"), RecordingBackend("legacy")
    with serve(core) as c, serve(legacy) as lg, \
            strangler_serve(tmp, c.url, lg.url, rules, env=LIMITS) as proxy:
        yield Edge(proxy, core, legacy)


def request(head: str, body: bytes = b"") -> bytes:
    """A request from readable lines: '|' separates lines, CRLF is added."""
    return head.replace("|", "\r\n").encode("latin-1") + b"\r\n\r\n" + body


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

# Each is sent alone on a fresh connection; none may reach a backend.
ATTACKS = {
    "conflicting content-length": request(
        "POST /carts HTTP/1.1|Host: x|Content-Length: 3|Content-Length: 40", b"abc" + SMUGGLED),
    "repeated content-length": request(
        "POST /carts HTTP/1.1|Host: x|Content-Length: 3|Content-Length: 3", b"abc"),
    "content-length list": request(
        "POST /carts HTTP/1.1|Host: x|Content-Length: 3, 3", b"abc"),
    "CL.TE": request(
        "POST /carts HTTP/1.1|Host: x|Content-Length: 5|Transfer-Encoding: chunked",
        b"0\r\n\r\n" + SMUGGLED),
    "TE.CL": request(
        "POST /carts HTTP/1.1|Host: x|Transfer-Encoding: chunked|Content-Length: 3",
        b"0\r\n\r\n" + SMUGGLED),
    "TE xchunked": request(
        "POST /carts HTTP/1.1|Host: x|Transfer-Encoding: xchunked", b"0\r\n\r\n" + SMUGGLED),
    "TE chunked, identity": request(
        "POST /carts HTTP/1.1|Host: x|Transfer-Encoding: chunked, identity", b"0\r\n\r\n"),
    "TE identity": request("POST /carts HTTP/1.1|Host: x|Transfer-Encoding: identity"),
    "TE gzip, chunked": request(
        "POST /carts HTTP/1.1|Host: x|Transfer-Encoding: gzip, chunked", b"0\r\n\r\n"),
    "TE with leading comma": request(
        "POST /carts HTTP/1.1|Host: x|Transfer-Encoding: ,chunked", b"0\r\n\r\n"),
    "TE quoted": request(
        "POST /carts HTTP/1.1|Host: x|Transfer-Encoding: \"chunked\"", b"0\r\n\r\n"),
    "TE space before colon": request(
        "POST /carts HTTP/1.1|Host: x|Transfer-Encoding : chunked", b"0\r\n\r\n" + SMUGGLED),
    "TE vertical tab": request(
        "POST /carts HTTP/1.1|Host: x|Transfer-Encoding:\x0bchunked", b"0\r\n\r\n"),
    "TE form feed": request(
        "POST /carts HTTP/1.1|Host: x|Transfer-Encoding:\x0cchunked", b"0\r\n\r\n"),
    "TE folded onto the previous line": request(
        "POST /carts HTTP/1.1|Host: x|X-A: 1| Transfer-Encoding: chunked", b"0\r\n\r\n"),
    "TE twice": request(
        "POST /carts HTTP/1.1|Host: x|Transfer-Encoding: chunked|Transfer-Encoding: chunked",
        b"0\r\n\r\n"),
    "TE in HTTP/1.0": request(
        "POST /carts HTTP/1.0|Host: x|Transfer-Encoding: chunked", b"0\r\n\r\n"),
    "chunk size not hex": request(
        "POST /carts HTTP/1.1|Host: x|Transfer-Encoding: chunked", b"zz\r\nabc\r\n0\r\n\r\n"),
    "negative chunk size": request(
        "POST /carts HTTP/1.1|Host: x|Transfer-Encoding: chunked", b"-1\r\nabc\r\n0\r\n\r\n"),
    "0x chunk size": request(
        "POST /carts HTTP/1.1|Host: x|Transfer-Encoding: chunked", b"0x3\r\nabc\r\n0\r\n\r\n"),
    "overflowing chunk size": request(
        "POST /carts HTTP/1.1|Host: x|Transfer-Encoding: chunked",
        b"fffffffffffffffff1\r\nabc\r\n0\r\n\r\n"),
    "chunk longer than its size": request(
        "POST /carts HTTP/1.1|Host: x|Transfer-Encoding: chunked",
        b"3\r\nabcdef\r\n0\r\n\r\n"),
    "chunk size with a space": request(
        "POST /carts HTTP/1.1|Host: x|Transfer-Encoding: chunked", b"3 \r\nabc\r\n0\r\n\r\n"),
    "chunk lines ended by bare LF": request(
        "POST /carts HTTP/1.1|Host: x|Transfer-Encoding: chunked", b"3\nabc\n0\n\n"),
    "LF inside a chunk extension": request(
        "POST /carts HTTP/1.1|Host: x|Transfer-Encoding: chunked",
        b"3;a\nX-Injected: 1\r\nabc\r\n0\r\n\r\n"),
    "content-length +3": request("POST /carts HTTP/1.1|Host: x|Content-Length: +3", b"abc"),
    "content-length 0x3": request("POST /carts HTTP/1.1|Host: x|Content-Length: 0x3", b"abc"),
    "content-length with trailing space": request(
        "POST /carts HTTP/1.1|Host: x|Content-Length: 3 ", b"abc"),
    "content-length overflow": request(
        "POST /carts HTTP/1.1|Host: x|Content-Length: 99999999999999999999999", b"abc"),
    "bare CR in a header value": request("GET /carts HTTP/1.1|Host: x|X-A: 1\rX-Injected: 1"),
    "bare LF in a header value": request("GET /carts HTTP/1.1|Host: x|X-A: 1\nX-Injected: 1"),
    "obs-fold continuation line": request("GET /carts HTTP/1.1|Host: x|X-A: 1|\tX-Injected: 1"),
    "NUL in a header value": request("GET /carts HTTP/1.1|Host: x|X-A: 1\x00X-Injected: 1"),
    "space in a header name": request("GET /carts HTTP/1.1|Host: x|X Injected: 1"),
    "request line ended by bare LF": b"GET /carts HTTP/1.1\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("attack", list(ATTACKS), ids=list(ATTACKS))
def test_smuggling_attempts_get_400_a_closed_connection_and_reach_no_backend(
    edge: Edge, attack: str,
) -> None:
    before = edge.arrivals()
    response, closed = raw_exchange(edge.proxy.port, ATTACKS[attack])
    assert status_of(response) == 400, response[:200]
    assert closed, "the connection must be closed after a framing error"
    time.sleep(0.05)  # a forwarded request would have arrived by now
    assert edge.arrivals() == before, "a backend received part of a rejected request"


LEGITIMATE = {
    "chunked with optional whitespace": request(
        "POST /carts HTTP/1.1|Host: x|Transfer-Encoding:\t  chunked |Connection: close",
        b"3\r\nabc\r\n0\r\n\r\n"),
    "chunked in upper case": request(
        "POST /carts HTTP/1.1|Host: x|Transfer-Encoding: CHUNKED|Connection: close",
        b"3\r\nabc\r\n0\r\n\r\n"),
    "chunk extension": request(
        "POST /carts HTTP/1.1|Host: x|Transfer-Encoding: chunked|Connection: close",
        b"3;name=value\r\nabc\r\n0\r\n\r\n"),
    "content-length": request(
        "POST /carts HTTP/1.1|Host: x|Content-Length: 3|Connection: close", b"abc"),
}


@pytest.mark.parametrize("case", list(LEGITIMATE), ids=list(LEGITIMATE))
def test_well_framed_requests_still_pass_with_their_body(edge: Edge, case: str) -> None:
    response, closed = raw_exchange(edge.proxy.port, LEGITIMATE[case])
    assert status_of(response) == 201, response[:300]
    assert closed
    assert b'"body_len": 3' in response


def test_trailers_are_dropped_not_promoted_to_headers(edge: Edge) -> None:
    response, _ = raw_exchange(edge.proxy.port, request(
        "POST /carts HTTP/1.1|Host: x|Transfer-Encoding: chunked|Connection: close",
        b"3\r\nabc\r\n0\r\nX-Trailer: evil\r\nX-Checkout-Session: victim-session\r\n\r\n"))
    assert status_of(response) == 201
    seen = (edge.core.arrived + edge.legacy.arrived)[-1]["headers"]
    assert "x-trailer" not in [name for name, _ in seen]
    assert ("x-checkout-session", "victim-session") not in seen


def test_crlf_in_the_url_is_forwarded_percent_encoded_never_as_a_header(edge: Edge) -> None:
    response, _ = raw_exchange(edge.proxy.port, request(
        "GET /carts/x%0d%0aX-Injected:%20yes HTTP/1.1|Host: x|Connection: close"))
    assert status_of(response) == 200
    arrived = (edge.core.arrived + edge.legacy.arrived)[-1]
    assert "x-injected" not in [name for name, _ in arrived["headers"]]
    assert arrived["raw_path"] == "/carts/x%0d%0aX-Injected:%20yes"  # as the client sent it


# -- sizes ----------------------------------------------------------------------------------

OVERSIZED = {
    "one huge header": request("GET /carts HTTP/1.1|Host: x|X-Big: " + "a" * 20_000),
    "two megabytes of header": request("GET /carts HTTP/1.1|Host: x|X-Big: " + "a" * 2_000_000),
    "many small headers": request(
        "GET /carts HTTP/1.1|Host: x|" + "|".join(f"X-H{i}: v" for i in range(2000))),
    "huge URL": request("GET /carts?" + "q" * 20_000 + " HTTP/1.1|Host: x"),
    "huge cookie": request("GET /carts HTTP/1.1|Host: x|Cookie: c=" + "a" * 9000),
}


@pytest.mark.parametrize("case", list(OVERSIZED), ids=list(OVERSIZED))
def test_oversized_request_heads_get_431_and_reach_no_backend(edge: Edge, case: str) -> None:
    before = edge.arrivals()
    response, closed = raw_exchange(edge.proxy.port, OVERSIZED[case])
    assert status_of(response) == 431, response[:200]
    assert b"application/problem+json" in response
    assert closed
    assert edge.arrivals() == before


def test_a_head_just_under_the_limit_is_served(edge: Edge) -> None:
    response, _ = raw_exchange(edge.proxy.port, request(
        "GET /carts HTTP/1.1|Host: x|Connection: close|X-Big: " + "a" * 7000))
    assert status_of(response) == 200


def test_oversized_bodies_get_413_declared_or_streamed(edge: Edge) -> None:
    before = edge.arrivals()
    r = httpx.post(edge.proxy.url + "/carts", content=b"x" * 70_000)
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    assert edge.arrivals() == before  # declared too large: refused before any upstream request

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"y" * 5000

    r = httpx.post(edge.proxy.url + "/carts", content=chunks())
    assert r.status_code == 413


# -- slow clients ---------------------------------------------------------------------------

def slow_client(port: int, data: bytes, pause: float, limit: float) -> tuple[bytes, float]:
    """Send `data` one byte at a time, `pause` seconds apart, reading as we go; returns
    (what came back, seconds until the server closed the connection)."""
    started = time.monotonic()
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        sock.setblocking(False)
        for i in range(len(data) + int(limit / pause)):
            try:
                chunk = sock.recv(65536)
                if not chunk:
                    return received, time.monotonic() - started
                received += chunk
            except BlockingIOError:
                pass
            except ConnectionResetError:
                return received, time.monotonic() - started
            if time.monotonic() - started > limit:
                break
            try:
                if i < len(data):
                    sock.send(data[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                pass
            time.sleep(pause)
    return received, float("inf")


def test_slowloris_heads_are_cut_off_while_other_clients_are_served(edge: Edge) -> None:
    head = request("GET /carts HTTP/1.1|Host: x|X-Slow: " + "s" * 200)
    with ThreadPoolExecutor(24) as pool:
        slow = [pool.submit(slow_client, edge.proxy.port, head, 0.1, 5.0) for _ in range(16)]
        idle = pool.submit(raw_exchange, edge.proxy.port, b"", 5.0)  # connects, sends nothing
        time.sleep(0.3)
        with httpx.Client(base_url=edge.proxy.url, timeout=2) as client:
            for _ in range(20):
                started = time.monotonic()
                assert client.get("/carts").status_code == 200
                assert time.monotonic() - started < 0.5
        for future in slow:
            response, closed_after = future.result()
            assert status_of(response) == 408, response
            assert closed_after < HEADER_TIMEOUT + 1.0
        response, closed = idle.result()
        assert closed and status_of(response) == 408


def test_a_slow_body_is_cut_off_with_408_while_other_clients_are_served(edge: Edge) -> None:
    head = request("POST /carts HTTP/1.1|Host: x|Content-Length: 100")
    # one byte every 0.3 s: never idle for a second, but over the 2 s body deadline
    with ThreadPoolExecutor(8) as pool:
        trickle = [pool.submit(slow_client_body, edge.proxy.port, head, 0.3) for _ in range(4)]
        with httpx.Client(base_url=edge.proxy.url, timeout=2) as client:
            for _ in range(10):
                assert client.post("/carts", content=b"ok").status_code == 201
        for future in trickle:
            response, closed_after = future.result()
            assert status_of(response) == 408, response
            assert BODY_TIMEOUT - 0.1 < closed_after < BODY_TIMEOUT + 1.0


def test_a_stalled_body_is_cut_off_after_the_idle_timeout(edge: Edge) -> None:
    started = time.monotonic()
    response, closed = raw_exchange(
        edge.proxy.port, request("POST /carts HTTP/1.1|Host: x|Content-Length: 100", b"x" * 10))
    assert status_of(response) == 408 and closed
    assert time.monotonic() - started < 1.0 + 1.0


def slow_client_body(port: int, head: bytes, pause: float) -> tuple[bytes, float]:
    started = time.monotonic()
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        while time.monotonic() - started < 5:
            try:
                chunk = sock.recv(65536)
                if not chunk:
                    return received, time.monotonic() - started
                received += chunk
            except BlockingIOError:
                pass
            except ConnectionResetError:
                break
            try:
                sock.send(b"b")
            except (BrokenPipeError, ConnectionResetError):
                pass
            time.sleep(pause)
    return received, time.monotonic() - started


# -- one path for matching and forwarding ---------------------------------------------------

PATHS = [
    # (request target, backend, decision starts with, path the backend receives)
    ("/warranties/carts", "core", "RULE; rule=ie-all", "/carts"),
    ("//warranties/carts", "core", "RULE; rule=ie-all", "/carts"),
    ("/warranties//carts", "core", "RULE; rule=ie-all", "/carts"),
    ("/warranties/./carts", "core", "RULE; rule=ie-all", "/carts"),
    ("/warranties%2Fcarts", "core", "RULE; rule=ie-all", "/carts"),
    ("/x/../warranties/carts", "core", "RULE; rule=ie-all", "/carts"),
    ("/x/..%2Fwarranties/carts", "core", "RULE; rule=ie-all", "/carts"),
    ("/warranties/..%2Fcarts", "legacy", "DEFAULT", "/carts"),
    ("/warranties/..%2Fhardware/carts", "legacy", "DEFAULT", None),  # no checkout route: 404
    ("/warranties/%2e%2e/x", "legacy", "DEFAULT", None),
    ("/warranties/%2E%2E%2F%2E%2E%2Fetc/passwd", "legacy", "DEFAULT", None),
    ("/carts/co_cart_1%2F..%2Flg_cart_2", "legacy", "OWNER", "/carts/lg_cart_2"),
    ("/carts/lg_cart_1/..%2F..%2Fcarts/co_cart_2/items", "core", "OWNER", "/carts/co_cart_2/items"),
    ("/warranties/carts/co_cart_1/..%2F..%2F..%2Forders%2Flg_ord_1", "legacy", "OWNER",
     "/orders/lg_ord_1"),
]


@pytest.mark.parametrize(("target", "backend", "decision", "forwarded"), PATHS,
                         ids=[p[0] for p in PATHS])
def test_paths_are_normalised_once_for_matching_and_for_forwarding(
    edge: Edge, target: str, backend: str, decision: str, forwarded: str | None,
) -> None:
    session = f"s-paths-{uuid.uuid4().hex}"  # a fresh unit: no stickiness involved
    before = edge.arrivals()
    response, _ = raw_exchange(edge.proxy.port, request(
        f"GET {target} HTTP/1.1|Host: x|X-Country: IE|X-Checkout-Session: {session}"
        "|Connection: close"))
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
    assert f"x-checkout-backend: {backend}" in head, head
    assert f"x-checkout-decision: {decision.lower()}" in head, head
    if forwarded is None:  # normalised outside the checkout routes: answered, not forwarded
        assert head.startswith("http/1.1 404"), head
        assert edge.arrivals() == before
        return
    arrived = (edge.core if backend == "core" else edge.legacy).arrived[-1]
    assert arrived["path"] == forwarded
    assert unquote(arrived["raw_path"]) == forwarded  # the bytes on the wire say the same
    assert "%2f" not in arrived["raw_path"].lower() and "/." not in arrived["raw_path"]


ESCAPES = [
    # (request target, backend, what the backend receives: the client's own bytes)
    ("/carts/%ff", "legacy", "/carts/%ff"),
    ("/carts/%fe", "legacy", "/carts/%fe"),
    ("/carts/%c0%ae", "legacy", "/carts/%c0%ae"),
    ("/carts/%C0%AE/items", "legacy", "/carts/%C0%AE/items"),
    ("/carts/caf%C3%A9%20x", "legacy", "/carts/caf%C3%A9%20x"),
    ("/warranties/carts/%ff", "legacy", "/carts/%ff"),  # the funnel prefix stripped
    ("/warranties/carts/co_cart_%ff/items", "core", "/carts/co_cart_%ff/items"),  # OWNER
]


@pytest.mark.parametrize(("target", "backend", "forwarded"), ESCAPES,
                         ids=[e[0] for e in ESCAPES])
def test_percent_escapes_reach_the_backend_as_the_client_sent_them(
    edge: Edge, target: str, backend: str, forwarded: str,
) -> None:
    """Before: the decoded path was re-encoded, and every invalid escape became U+FFFD:
    `/carts/%ff`, `/carts/%fe` and `/carts/%c0%ae` all reached the backend as
    `/carts/%EF%BF%BD`, three requests made one."""
    response, _ = raw_exchange(edge.proxy.port, request(
        f"GET {target} HTTP/1.1|Host: x|X-Country: IE|Connection: close"))
    assert status_of(response) == 200, response[:300]
    arrived = (edge.core if backend == "core" else edge.legacy).arrived[-1]
    assert arrived["raw_path"] == forwarded
    assert arrived["path"] == unquote(forwarded)  # decoded, it is the path that was routed


def test_the_listener_keeps_serving_after_every_attack(edge: Edge) -> None:
    assert httpx.get(edge.proxy.url + "/carts").status_code == 200
    assert edge.proxy.proc.poll() is None
    log = edge.proxy.log_text()
    assert "Traceback" not in log, log[-3000:]
