"""proxy.h1client, and the proxy around it, against a reference HTTP/1.1 parser.

Hypothesis writes what an upstream sends in answer to a GET or a HEAD: 1xx interim
responses, then a final one (status line, header fields, a body framed by Content-Length,
by chunks with extensions and trailers, or by the close; or no body, for HEAD, 204 and
304), sometimes broken (`FAULTS`), sometimes followed by bytes nobody asked for (junk, a
second response, a stray body). A raw socket upstream writes those bytes, in one to four
packets; h11 (`h11.Connection(h11.CLIENT)`) reads the same bytes and says what they mean.

- What the reference accepts reaches the caller with the same status, header fields
  (values without their surrounding whitespace) and body bytes; through the proxy, minus
  the hop-by-hop fields and the framing (the proxy may frame the body its own way), with
  the proxy's Via, X-Checkout-* and session cookie added.
- What it refuses never reaches a client as a response: an error the head shows is a
  ConnectionBroken from `Pool.request` (a 502 problem+json through the proxy); one in the
  body makes the body read fail (a 502 when the proxy had not started the response, else
  a response cut short, never complete).
- Either way the next exchange (on the same client connection when it is still open) gets
  its own answer, and after bytes nobody asked for or a refused response, from another
  upstream connection: nothing leaks from one exchange into the next.

The reference is h11 made stricter where RFC 9110/9112 let a recipient refuse and llhttp
does (`stricter_than_h11`): a status over 599, a control character in a field value, a
folded field line, a repeated Content-Length, Content-Length beside Transfer-Encoding; and
where llhttp would frame the body otherwise: a tab after `chunked` (llhttp then reads to
the close, so the client refuses the response). Not generated, because the two read them
differently and the test would only restate it: transfer codings other than chunked (h11
refuses them all; the proxy forwards them, tests/integration/test_upstream_framing.py),
whitespace around `;` in chunk extensions (RFC 9112 7.1.1 allows it, llhttp refuses it),
an RTSP/ or ICE/ status line after a 1xx (llhttp reads it; the client checks only the first
line), HTTP versions other than 1.0 and 1.1, Transfer-Encoding in an HTTP/1.0 response.
One difference is tolerated: CR and LF after a complete response in the same packet are
skipped by llhttp (the next response is read by a new parser), so that connection may be
reused.

Most examples drive the h1client `Pool` directly; `PROXY_EXAMPLES` go through the real
proxy (uvicorn, `create_app`). Profiles: `h1-differential`, and `h1-differential-ci`
(derandomized, no example database) when CI is set.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h11
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from proxy.config import ProxySettings
from proxy.h1client import ConnectionBroken, Pool
from proxy.main import UVICORN_OPTIONS, create_app
from tests.support.ci import under_ci
from tests.support.servers import serve

POOL_EXAMPLES = 2000
PROXY_EXAMPLES = 200
_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("h1-differential", max_examples=POOL_EXAMPLES, **_COMMON)
settings.register_profile("h1-differential-ci", max_examples=POOL_EXAMPLES, derandomize=True,
                          database=None, **_COMMON)
PROFILE = settings.get_profile("h1-differential-ci" if under_ci() else "h1-differential")

PAUSE = 0.001  # between the packets of one answer
TIMEOUT = 10.0  # for one example; the pools' read timeout is shorter

# -- what an upstream sends ------------------------------------------------------------------------


class Case:
    """The upstream's answer to one request: `wire` written in packets cut at `cuts`, then
    the connection closed when `close`. (Not a dataclass: Hypothesis would print every
    byte of a large body.)"""

    __slots__ = ("close", "cuts", "method", "wire")

    def __init__(self, method: str, wire: bytes, cuts: tuple[int, ...], close: bool) -> None:
        self.method, self.wire, self.cuts, self.close = method, wire, cuts, close

    def packets(self) -> list[bytes]:
        edges = [0, *self.cuts, len(self.wire)]
        return [self.wire[a:b] for a, b in itertools.pairwise(edges) if b > a]

    def __repr__(self) -> str:  # a large body elided: the bytes around it matter
        wire = repr(self.wire) if len(self.wire) < 2000 else (
            f"{self.wire[:600]!r} + <{len(self.wire) - 1200} bytes> + {self.wire[-600:]!r}")
        return f"Case({self.method!r}, {wire}, cuts={self.cuts}, close={self.close})"


TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VCHAR = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))
NAMES = [b"X-Request-Id", b"x-trace", b"Set-Cookie", b"Cache-Control", b"ETag", b"Vary",
         b"Content-Type", b"Location", b"Via", b"Date", b"Server", b"Link", b"X-Empty",
         b"Keep-Alive", b"X-Private", b"X-Checkout-Backend", b"Content-Encoding", b"Upgrade",
         b"Proxy-Connection", b"Trailer", b"TE"]
VALUES = [b"", b"1", b"no-store", b"sid=abc; Path=/; HttpOnly", b'"v1"',
          b"text/html; charset=utf-8", b"1.0 fred, 1.1 wilma", b"Tue, 15 Nov 1994 08:12:31 GMT",
          b"</a>; rel=preload", b"timeout=5", b"h2c", b"gzip", b"caf\xe9", b"a  b\tc", b"core"]
CONNECTION = [b"keep-alive", b"close", b"X-Private", b"keep-alive, X-Private", b"Upgrade"]
OWS = [(b" ", b""), (b"", b""), (b"  ", b" "), (b"\t", b"\t"), (b" ", b"   ")]
FINAL = [200, 200, 200, 201, 202, 204, 204, 206, 301, 302, 304, 304, 400, 404, 409, 422, 500,
         502, 503, 599]
REASONS = [b"OK", b"", b"Whatever it is", b"caf\xe9", b"x\ty"]
CHUNK_EXT = [b"", b"", b";a", b";name=value", b';q="quoted \\"x\\""', b";a=1;b"]
TAILS = [b"<script>evil</script>!", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
         b"HTTP/1.1 204 No Content\r\n\r\n", b"\r\n", b"\r\nevil", b"0\r\n\r\n"]
BAD_STATUS_LINES = [b"HTTP/1.1 2000 OK", b"HTTP/1.1 20 OK", b"HTTP/1.1 abc OK",
                    b"HTTP/1.1  200 OK", b"HTTP/1.1 200OK", b"HTTP/1.1 600 Odd",
                    b"HTTP/1.1 999 Odd", b"HTTP/1.1 099 Odd", b"HTTP/2 200 OK", b"garbage",
                    b"HTTP/1.1", b"RTSP/1.0 200 OK", b"ICE/1.0 200 OK", b"http/1.1 200 OK"]
BAD_FIELDS = [b"Bad Header: x", b" folded", b"X-A: a\x01b", b"X-A: a\x7fb", b"NoColon",
              b": empty-name", b"X-A: a\rb", b"X-A : b", b"X\x80: b"]
BAD_LENGTHS = [b"abc", b"-1", b"+5", b"1 2", b"", b"0x10", b"99999999999999999999999"]
BAD_CHUNK_SIZES = [b"zz", b"-1", b"0x5", b"FFFFFFFFFFFFFFFFFFFF", b""]
BAD_CHUNK_DATA = [b"3\r\nhello\r\n0\r\n\r\n", b"5\nhello\n0\n\n", b"5\r\nhello0\r\n\r\n",
                  b"5\r\nhello\r\n0\r\nX\r\n\r\n", b"5\r\nhello\r\n"]
BODY_FAULTS = ["chunk-size", "chunk-data", "truncate"]
FAULTS = ["status", "field", "length", "lengths", "length-and-chunked", "chunked-twice", "101",
          *BODY_FAULTS]


def field_line(name: bytes, value: bytes, ows: tuple[bytes, bytes]) -> bytes:
    return name + b":" + ows[0] + value + ows[1] + b"\r\n"


@st.composite
def fields(draw: st.DrawFn) -> list[bytes]:
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.sampled_from(NAMES) | st.binary(min_size=1, max_size=12).map(
            lambda raw: bytes(TCHAR[b % len(TCHAR)] for b in raw)))
        value = draw(st.sampled_from(VALUES) | st.lists(
            st.binary(min_size=1, max_size=6).map(lambda raw: bytes(VCHAR[b % len(VCHAR)]
                                                                     for b in raw)),
            min_size=1, max_size=3).map(b" ".join))
        lines.append(field_line(name, value, draw(st.sampled_from(OWS))))
    if draw(st.integers(0, 5)) == 0:
        lines.append(field_line(b"Connection", draw(st.sampled_from(CONNECTION)), (b" ", b"")))
    return lines


def pattern(size: int) -> bytes:
    return (b"0123456789abcdef" * (size // 16 + 1))[:size]


@st.composite
def chunked(draw: st.DrawFn, body: bytes) -> bytes:
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(body) - 1)), max_size=3)))
    pieces = [body[a:b] for a, b in itertools.pairwise([0, *cuts, len(body)]) if b > a]
    out = []
    for piece in pieces:
        size = b"%x" % len(piece) if draw(st.booleans()) else b"%X" % len(piece)
        out.append(b"0" * draw(st.integers(0, 2)) + size + draw(st.sampled_from(CHUNK_EXT))
                   + b"\r\n" + piece + b"\r\n")
    out.append(b"0" * draw(st.integers(1, 3)) + draw(st.sampled_from(CHUNK_EXT)) + b"\r\n")
    for _ in range(draw(st.integers(0, 2))):
        out.append(field_line(draw(st.sampled_from([b"X-Trailer", b"Server-Timing", b"X-C"])),
                              draw(st.sampled_from(VALUES[:8])), draw(st.sampled_from(OWS))))
    return b"".join(out) + b"\r\n"


@st.composite
def interim(draw: st.DrawFn) -> bytes:
    status = draw(st.sampled_from([100, 102, 103]))
    return b"HTTP/1.1 %d Interim\r\n%b\r\n" % (status, b"".join(draw(fields())))


@st.composite
def cases(draw: st.DrawFn) -> Case:
    method = draw(st.sampled_from(["GET", "GET", "GET", "HEAD"]))
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.1", b"1.0"]))
    status = draw(st.sampled_from(FINAL))
    framing = draw(st.sampled_from(["length", "length", "chunked", "chunked", "close"]
                                   if version == b"1.1" else ["length", "close"]))
    body = draw(st.binary(max_size=200) | st.sampled_from([65536, 65537, 300_000]).map(pattern))
    fault = draw(st.sampled_from([None] * 3 * len(FAULTS) + FAULTS + BODY_FAULTS * 2))
    interims = [draw(interim()) for _ in range(draw(st.integers(0, 2)))]

    lines = draw(fields())
    if framing == "length":
        lines.append(field_line(b"Content-Length", b"0" * draw(st.integers(0, 1))
                                + b"%d" % len(body), draw(st.sampled_from(OWS))))
    elif framing == "chunked":
        lines.append(field_line(b"Transfer-Encoding", draw(st.sampled_from(
            [b"chunked", b"Chunked", b"CHUNKED"])), draw(st.sampled_from(OWS))))
    lines = [b"HTTP/%b %d %b\r\n" % (version, status, draw(st.sampled_from(REASONS))),
             *draw(st.permutations(lines))]
    if method == "HEAD" or status in (204, 304):  # none from a well-behaved upstream
        payload = b"" if draw(st.integers(0, 4)) else (body or b"stray")
    elif framing == "chunked":
        payload = draw(chunked(body))
    else:
        payload = body
    if fault is not None:
        lines, payload = with_fault(draw, fault, lines, payload, body, bool(interims))
    final = b"".join(lines) + b"\r\n" + payload
    if fault == "truncate" and len(final) > 1:
        final = final[:draw(st.integers(1, len(final) - 1))]
    if fault == "101":
        interims.append(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
    wire = b"".join(interims) + final
    if fault != "truncate" and draw(st.integers(0, 3)) == 0:  # (cut short, then more: a
        wire += draw(st.sampled_from(TAILS))  # head could end in "Transfer-Encoding:0")
    close = fault is not None or framing == "close" or draw(st.booleans())
    cuts = tuple(sorted(draw(st.sets(st.integers(1, max(1, len(wire) - 1)), max_size=3))))
    return Case(method, wire, cuts, close)


def with_fault(draw: st.DrawFn, fault: str, lines: list[bytes], payload: bytes, body: bytes,
               after_interim: bool) -> tuple[list[bytes], bytes]:
    """The final response's head lines and payload with `fault` in them."""
    def framing_line(line: bytes) -> bool:
        return line.lower().startswith((b"content-length:", b"transfer-encoding:"))

    at = draw(st.integers(1, len(lines)))
    if fault == "status":
        bad = [line for line in BAD_STATUS_LINES if not (  # llhttp reads these after a 1xx
            after_interim and line.startswith((b"RTSP/", b"ICE/")))]
        lines[0] = draw(st.sampled_from(bad)) + b"\r\n"
    elif fault == "field":
        lines.insert(at, draw(st.sampled_from(BAD_FIELDS)) + b"\r\n")
    elif fault == "length":
        lines.insert(at, field_line(b"Content-Length", draw(st.sampled_from(BAD_LENGTHS)),
                                    (b" ", b"")))
    elif fault == "lengths":  # repeated, equal or not, in two fields or in one
        n, m = len(body), draw(st.sampled_from([len(body), len(body) + 1]))
        lines.insert(at, draw(st.sampled_from([
            field_line(b"Content-Length", b"%d" % n, (b" ", b"")) * 2,
            field_line(b"Content-Length", b"%d" % n, (b" ", b""))
            + field_line(b"content-length", b"%d" % m, (b" ", b"")),
            field_line(b"Content-Length", b"%d, %d" % (n, m), (b" ", b""))])))
    elif fault == "length-and-chunked":
        lines.insert(at, field_line(b"Content-Length", b"%d" % len(payload), (b" ", b""))
                     + field_line(b"Transfer-Encoding", b"chunked", (b" ", b"")))
    elif fault == "chunked-twice":
        lines = [line for line in lines if not framing_line(line)]
        lines.insert(min(at, len(lines)), draw(st.sampled_from([
            field_line(b"Transfer-Encoding", b"chunked", (b" ", b"")) * 2,
            field_line(b"Transfer-Encoding", b"chunked, chunked", (b" ", b""))])))
        payload = b"5\r\nhello\r\n0\r\n\r\n"
    elif fault in ("chunk-size", "chunk-data"):
        lines = [line for line in lines if not framing_line(line)]
        lines.insert(min(at, len(lines)), field_line(b"Transfer-Encoding", b"chunked",
                                                     (b" ", b"")))
        payload = draw(st.sampled_from(
            [size + b"\r\nhello\r\n0\r\n\r\n" for size in BAD_CHUNK_SIZES]
            if fault == "chunk-size" else BAD_CHUNK_DATA))
    return lines, payload


# -- the reference ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Meaning:
    """What the reference reads in a Case: the final response, or why it is refused."""

    status: int = 0
    headers: tuple[tuple[bytes, bytes], ...] = ()  # names as sent, values without OWS
    body: bytes = b""
    extra: bytes = b""  # bytes after the complete response
    refused: str | None = None
    refused_in_head: bool = False

    def __repr__(self) -> str:
        body = repr(self.body) if len(self.body) < 200 else f"<{len(self.body)} bytes>"
        return (f"Meaning(status={self.status}, headers={self.headers!r}, body={body}, "
                f"extra={self.extra!r}, refused={self.refused!r}, "
                f"refused_in_head={self.refused_in_head})")

    def kind(self) -> str:
        if self.refused is not None:
            return "refused in the head" if self.refused_in_head else "refused in the body"
        return "accepted, bytes after it" if self.extra else "accepted"


CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def reference(case: Case) -> Meaning:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=case.method, target="/", headers=[("host", "upstream")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(case.wire)
    if case.close:
        conn.receive_data(b"")
    response: h11.Response | None = None
    fields: list[tuple[bytes, bytes]] = []
    body = bytearray()
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.InformationalResponse):
                fields += event.headers.raw_items()
            elif isinstance(event, h11.Response):
                response = event
                why = stricter_than_h11(case.wire, event, fields + event.headers.raw_items())
                if why is not None:
                    return Meaning(refused=why, refused_in_head=True)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                if any(CTL.search(v) for _, v in event.headers.raw_items()):
                    return Meaning(refused="a control character in a trailer")
                break
            elif event is h11.NEED_DATA:
                raise AssertionError(f"a generated answer that never ends: {case!r}")
    except h11.RemoteProtocolError as exc:
        return Meaning(refused=str(exc), refused_in_head=response is None)
    assert response is not None
    return Meaning(response.status_code, tuple(response.headers.raw_items()), bytes(body),
                   bytes(conn.trailing_data[0]))


def stricter_than_h11(wire: bytes, response: h11.Response,
                      fields: list[tuple[bytes, bytes]]) -> str | None:
    """Why a head h11 accepts is refused all the same (RFC 9110/9112 allow it; llhttp does).
    `fields`: those of the final response and of the 1xx before it, as h11 read them."""
    if response.status_code > 599:
        return "a status over 599 (RFC 9110 15)"
    if any(CTL.search(v) for _, v in fields):
        return "a control character in a field value (RFC 9110 5.5)"
    if any(line[:1] in (b" ", b"\t") for head in heads(wire) for line in head.split(b"\r\n")):
        return "a folded field line (RFC 9112 5.2: a gateway may answer 502)"
    raw = [(name.lower(), value) for name, value in raw_fields(wire)]
    lengths = [value for name, value in raw if name == b"content-length"]
    if len(lengths) > 1 or any(b"," in value for value in lengths):
        return "a repeated Content-Length (RFC 9110 8.6)"
    codings = [value for name, value in raw if name == b"transfer-encoding"]
    if lengths and codings:
        return "Content-Length beside Transfer-Encoding (RFC 9112 6.3)"
    if any(value.rstrip(b" ").endswith(b"\t") for value in codings):
        return "a tab after chunked: llhttp would read the body to the close, so it is refused"
    return None


def raw_fields(wire: bytes) -> list[tuple[bytes, bytes]]:
    """The final head's fields with the whitespace after their values, as sent (no line is
    folded: stricter_than_h11 looked)."""
    fields = [line.split(b":", 1) for line in heads(wire)[-1].split(b"\r\n")[1:]]
    return [(name, value.lstrip(b" \t")) for name, value in fields]


def heads(wire: bytes) -> list[bytes]:
    """The heads of the 1xx responses and of the final one (h11 read them: well formed)."""
    found, start = [], 0
    while True:
        end = wire.index(b"\r\n\r\n", start)
        found.append(wire[start:end])
        if wire[start + 9:start + 10] != b"1":
            return found
        start = end + 4


def relayed(headers: tuple[tuple[bytes, bytes], ...]) -> list[tuple[bytes, bytes]]:
    """The upstream's fields as a client of the proxy must see them: minus hop-by-hop ones
    (and those Connection names), framing, Via and X-Checkout-* (the proxy sets those)."""
    lowered = [(n.lower(), v) for n, v in headers]
    named = {t.strip().lower() for n, v in lowered if n == b"connection" for t in v.split(b",")}
    drop = HOP_BY_HOP | named | {b"content-length", b"via"}
    return [(n, v) for n, v in lowered if n not in drop and not n.startswith(b"x-checkout-")]


HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                        b"transfer-encoding", b"upgrade"})


def tolerated_reuse(meaning: Meaning) -> bool:
    """Whether the upstream connection may serve the next exchange."""
    return meaning.refused is None and not meaning.extra.strip(b"\r\n")


# -- the upstream ----------------------------------------------------------------------------------


class Upstream:
    """Answers a request for a registered target with its Case; any other target with
    `next <target> on connection <n>`. Notes the connection each target came on.

    The fixtures' objects are plain classes: Hypothesis prints the fields of dataclasses
    passed to a test, here thousands of targets."""

    def __init__(self) -> None:
        self.cases: dict[str, Case] = {}
        self.written: dict[str, asyncio.Event] = {}
        self.came_on: dict[str, int] = {}
        self.server: asyncio.Server | None = None
        self.port = 0
        self._numbers = itertools.count()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def expect(self, target: str, case: Case) -> asyncio.Event:
        self.cases[target] = case
        self.written[target] = done = asyncio.Event()
        return done

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = next(self._numbers)
        writer.transport.set_write_buffer_limits(0)  # drain(): all of it handed to the kernel
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")  # GET and HEAD: no body
                target = head.split(b" ", 2)[1].decode()
                self.came_on[target] = number
                case = self.cases.pop(target, None)
                if case is None:
                    body = b"next %b on connection %d" % (target.encode(), number)
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b"
                                 % (len(body), body))
                    continue
                try:
                    await self._write(writer, case)
                finally:
                    self.written[target].set()
                if case.close:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _write(self, writer: asyncio.StreamWriter, case: Case) -> None:
        for i, packet in enumerate(case.packets()):
            if i:
                await asyncio.sleep(PAUSE)
            writer.write(packet)
            await writer.drain()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


# -- through the h1client Pool ---------------------------------------------------------------------


class PoolBench:
    def __init__(self, runner: asyncio.Runner, upstream: Upstream, pool: Pool) -> None:
        self.runner, self.upstream, self.pool = runner, upstream, pool
        self.serial = itertools.count()


@pytest.fixture(scope="module")
def pool_bench() -> Iterator[PoolBench]:
    with asyncio.Runner() as runner:
        upstream = Upstream()
        runner.run(upstream.start())
        pool = Pool("127.0.0.1", upstream.port, limit=1, connect_timeout=2.0, read_timeout=3.0)
        yield PoolBench(runner, upstream, pool)
        runner.run(pool.close())
        runner.run(upstream.stop())


async def through_the_pool(bench: PoolBench, case: Case, meaning: Meaning) -> None:
    pool, upstream = bench.pool, bench.upstream
    target = f"/case/{next(bench.serial)}"
    written = upstream.expect(target, case)
    status, headers, body, refused = 0, (), b"", ""
    try:
        response = await pool.request(case.method, target, [])
    except ConnectionBroken as exc:
        refused = f"head: {exc}"
    else:
        try:
            status, headers = response.status, tuple(response.raw_headers)
            body = await response.read()
        except ConnectionBroken as exc:
            refused = f"body: {exc}"
        finally:
            response.release()
    await written.wait()
    await asyncio.sleep(PAUSE)  # what was written arrived

    if meaning.refused is None:
        assert not refused, f"refused what the reference accepts: {refused}"
        assert status == meaning.status
        assert [(n, strip_ows(v)) for n, v in headers] == [
            (n, v.lower() if n.lower() == b"transfer-encoding" else v)
            for n, v in meaning.headers]
        assert body == meaning.body
    else:
        assert refused, f"accepted what the reference refuses ({meaning.refused})"
        if meaning.refused_in_head:
            assert refused.startswith("head:"), refused
    await the_next_exchange_is_clean(bench, target, meaning)


def strip_ows(value: bytes) -> bytes:
    value = value.strip(b" \t")
    return value.lower() if value.lower() == b"chunked" else value


async def the_next_exchange_is_clean(bench: PoolBench, target: str, meaning: Meaning) -> None:
    response = await bench.pool.request("GET", target + "/next", [])
    try:
        body = await response.read()
    finally:
        response.release()
    number = bench.upstream.came_on[target + "/next"]
    assert (response.status, body) == (200, b"next %b/next on connection %d"
                                       % (target.encode(), number))
    if not tolerated_reuse(meaning):
        assert number != bench.upstream.came_on[target], "a suspect connection was reused"


@settings(PROFILE)
@given(case=cases())
def test_the_pool_reads_what_the_reference_reads(pool_bench: PoolBench, case: Case) -> None:
    note(repr(case))
    meaning = reference(case)
    note(f"reference: {meaning!r}")
    event(meaning.kind())

    async def check() -> None:
        async with asyncio.timeout(TIMEOUT):
            await through_the_pool(pool_bench, case, meaning)

    pool_bench.runner.run(check())


# -- through the proxy -----------------------------------------------------------------------------


class ProxyBench:
    def __init__(self, runner: asyncio.Runner, upstream: Upstream, port: int) -> None:
        self.runner, self.upstream, self.port = runner, upstream, port
        self.serial = itertools.count()


@pytest.fixture(scope="module")
def proxy_bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyBench]:
    tmp: Path = tmp_path_factory.mktemp("differential")
    with asyncio.Runner() as runner:
        upstream = Upstream()
        runner.run(upstream.start())
        url = f"http://127.0.0.1:{upstream.port}"
        proxy_settings = ProxySettings(
            core_url=url, legacy_url=url, rules_file=None, db_path=str(tmp / "c.sqlite3"),
            state_cache="", forward_path_prefixes=[], legacy_read_timeout=3.0)
        try:
            with serve(create_app(proxy_settings), **UVICORN_OPTIONS) as proxy:
                yield ProxyBench(runner, upstream, proxy.port)
        finally:
            runner.run(upstream.stop())


@dataclass
class Exchange:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False


class ProxyClient:
    """A keep-alive connection to the proxy; answers read by h11."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.conn = h11.Connection(h11.CLIENT)

    async def exchange(self, method: str, target: str) -> Exchange:
        if self.writer is None or not self.reusable():
            await self.close()
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.conn = h11.Connection(h11.CLIENT)
        else:
            self.conn.start_next_cycle()
        assert self.reader is not None
        self.writer.write(self.conn.send(h11.Request(
            method=method, target=target, headers=[("host", "shop.example")])) or b"")
        self.writer.write(self.conn.send(h11.EndOfMessage()) or b"")
        got = Exchange()
        try:
            while True:
                event = self.conn.next_event()
                if event is h11.NEED_DATA:
                    self.conn.receive_data(await self.reader.read(65536))
                elif isinstance(event, h11.Response):
                    got.status, got.headers = event.status_code, list(event.headers)
                elif isinstance(event, h11.Data):
                    got.body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    got.complete = True
                    return got
                else:
                    raise AssertionError(f"unexpected {event!r}")
        except (h11.RemoteProtocolError, ConnectionError):
            return got  # cut short

    def reusable(self) -> bool:
        return self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except ConnectionError:
                pass
            self.writer = None


PROXY_ADDS = (b"via", b"x-checkout-backend", b"x-checkout-decision")
FRAMING = (b"content-length", b"transfer-encoding")


def from_upstream(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(n, v) for n, v in headers if n not in PROXY_ADDS + FRAMING
            and not (n == b"set-cookie" and v.startswith(b"checkout_session="))]


def list_items(values: list[bytes]) -> list[bytes]:
    """The elements of a list-valued field, whatever the whitespace around its commas."""
    return [item.strip(b" \t") for value in values for item in value.split(b",")]


async def through_the_proxy(bench: ProxyBench, case: Case, meaning: Meaning) -> None:
    upstream = bench.upstream
    target = f"/case/{next(bench.serial)}"
    written = upstream.expect(target, case)
    client = ProxyClient(bench.port)
    try:
        got = await client.exchange(case.method, target)
        await written.wait()
        await asyncio.sleep(PAUSE)
        if meaning.refused is None:
            assert got.complete, "a response the reference accepts was cut short"
            assert got.status == meaning.status
            assert from_upstream(got.headers) == relayed(meaning.headers)
            vias = [v for n, v in meaning.headers if n.lower() == b"via"]
            assert list_items([v for n, v in got.headers if n == b"via"]) == [
                *list_items(vias), b"1.1 strangler"]
            assert got.body == meaning.body
        elif meaning.refused_in_head or got.complete:
            assert (got.status, got.complete) == (502, True), meaning.refused
            assert (b"content-type", b"application/problem+json") in got.headers
        # else: cut short after the head (a refused body), never complete
        if not client.reusable():
            await client.close()
        following = await client.exchange("GET", target + "/next")
        number = upstream.came_on[target + "/next"]
        assert following.complete and following.status == 200
        assert following.body == b"next %b/next on connection %d" % (target.encode(), number)
        assert from_upstream(following.headers) == []  # nothing of the case's answer
        if not tolerated_reuse(meaning):
            assert number != upstream.came_on[target], "a suspect connection was reused"
    finally:
        await client.close()


@settings(PROFILE, max_examples=PROXY_EXAMPLES)
@given(case=cases())
def test_the_proxy_relays_what_the_reference_reads(proxy_bench: ProxyBench, case: Case) -> None:
    note(repr(case))
    meaning = reference(case)
    note(f"reference: {meaning!r}")
    event(meaning.kind())

    async def check() -> None:
        async with asyncio.timeout(TIMEOUT):
            await through_the_proxy(proxy_bench, case, meaning)

    proxy_bench.runner.run(check())
