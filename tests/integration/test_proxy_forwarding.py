"""The forwarding path against real backends on loopback."""

from __future__ import annotations

import gzip
import socket
import threading
import time

import httpx
import pytest

from tests.support.processes import wait_until

WARRANTIES_IE = {"X-Checkout-Funnel": "warranties", "X-Country": "IE"}
WARRANTIES_DE = {"X-Checkout-Funnel": "warranties", "X-Country": "DE"}


@pytest.fixture
def hangup_server():
    """A backend that reads a request and hangs up without answering."""
    received: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                received.append(conn.recv(65536))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield listener.getsockname()[1], received
    stop.set()
    thread.join(2)
    listener.close()


def header_names(seen: dict) -> list[str]:
    return [name for name, _ in seen["headers"]]


def header(seen: dict, name: str) -> list[str]:
    return [value for key, value in seen["headers"] if key == name]


def test_rule_routes_to_core_and_says_why(make_stack):
    stack = make_stack()
    r = httpx.post(stack.url + "/carts", headers=WARRANTIES_IE, json={"country": "IE"})
    assert r.status_code == 201
    assert r.json()["backend"] == "core"
    assert r.headers["x-checkout-backend"] == "core"
    decision = r.headers["x-checkout-decision"]
    assert decision.startswith("RULE; rule=ie-all; bucket=") and decision.endswith("; rules=1")


def test_hop_by_hop_headers_are_removed_and_forwarding_headers_added(make_stack):
    stack = make_stack()
    r = httpx.get(stack.url + "/carts?x=1&y=%20", headers={
        **WARRANTIES_DE, "Connection": "keep-alive, X-Private", "X-Private": "drop-me",
        "TE": "trailers", "Proxy-Authorization": "Basic abc", "Keep-Alive": "timeout=5",
        "X-Checkout-Backend": "core", "X-Checkout-Decision": "RULE; forged",
        "X-Forwarded-For": "6.6.6.6", "Accept-Encoding": "gzip",
    })
    seen = r.json()
    names = header_names(seen)
    for dropped in ("x-private", "te", "proxy-authorization", "keep-alive",
                    "x-checkout-backend", "x-checkout-decision"):
        assert dropped not in names
    assert header(seen, "x-forwarded-for") == ["127.0.0.1"]  # untrusted peer: replaced
    assert header(seen, "x-forwarded-proto") == ["http"]
    assert header(seen, "x-forwarded-host") == [stack.url.removeprefix("http://")]
    assert header(seen, "host") == [stack.legacy.url.removeprefix("http://")]
    assert header(seen, "via") == ["1.1 strangler"]
    assert header(seen, "accept-encoding") == ["gzip"]
    assert "user-agent" in names  # the client's own, not aiohttp's
    assert header(seen, "user-agent")[0].startswith("python-httpx")
    assert seen["query"] == "x=1&y=%20"
    # response side
    assert r.headers["x-checkout-backend"] == "legacy"
    assert "x-upstream-private" not in r.headers
    assert "keep-alive" not in r.headers
    assert r.headers["via"] == "1.1 strangler"
    assert r.headers.get_list("set-cookie")[:2] == ["first=1; Path=/", "second=2; Path=/"]


def test_trusted_proxy_keeps_the_forwarded_chain(make_stack):
    stack = make_stack(trusted_proxies=["127.0.0.0/8"])
    r = httpx.get(stack.url + "/carts", headers={
        **WARRANTIES_DE, "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
    })
    seen = r.json()
    assert header(seen, "x-forwarded-for") == ["203.0.113.7, 127.0.0.1"]
    assert header(seen, "x-forwarded-proto") == ["https"]


def test_content_encoding_passes_through_untouched(make_stack):
    stack = make_stack()
    with httpx.Client() as client:
        r = client.get(stack.url + "/_test/gzip", headers={"Accept-Encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip"
        assert int(r.headers["content-length"]) == len(gzip.compress(b"hello " * 100))
        assert r.text == "hello " * 100  # httpx decodes: the bytes arrived compressed


def test_upstream_cookies_are_never_replayed_to_another_customer(make_stack):
    stack = make_stack()
    httpx.get(stack.url + "/carts", headers=WARRANTIES_DE)  # upstream sets first=1
    r = httpx.get(stack.url + "/carts", headers=WARRANTIES_DE)
    assert "cookie" not in header_names(r.json())


def test_minted_session_is_sent_upstream_and_set_as_cookie(make_stack):
    stack = make_stack()
    r = httpx.post(stack.url + "/carts", headers=WARRANTIES_DE)
    cookies = [c for c in r.headers.get_list("set-cookie") if c.startswith("checkout_session=")]
    assert len(cookies) == 1
    unit = cookies[0].split(";")[0].split("=", 1)[1]
    assert header(r.json(), "x-checkout-session") == [unit]
    again = httpx.post(stack.url + "/carts", headers=WARRANTIES_DE,
                       cookies={"checkout_session": unit})
    assert not any(c.startswith("checkout_session=")
                   for c in again.headers.get_list("set-cookie"))


def test_request_body_is_streamed_with_its_length(make_stack):
    stack = make_stack()
    body = b"x" * 300_000
    r = httpx.post(stack.url + "/carts", headers=WARRANTIES_DE, content=body)
    seen = r.json()
    assert seen["body_len"] == len(body)
    assert header(seen, "content-length") == [str(len(body))]

    def chunks():
        for _ in range(10):
            yield b"y" * 10_000

    r = httpx.post(stack.url + "/carts", headers=WARRANTIES_DE, content=chunks())
    assert r.json()["body_len"] == 100_000
    assert header(r.json(), "transfer-encoding") == ["chunked"]


def test_response_is_streamed_not_buffered(make_stack):
    stack = make_stack()
    with httpx.stream("GET", stack.url + "/_test/stream", timeout=10) as r:
        started = time.monotonic()
        stream = r.iter_raw()
        first = next(stream)
        first_at = time.monotonic() - started
        rest = b"".join(stream)
        total = time.monotonic() - started
    assert first.startswith(b"chunk-0")
    assert (first + rest).count(b"chunk-") == 5
    assert first_at < total - 0.5  # the first chunk arrived long before the last


def test_body_over_the_limit_is_413(make_stack):
    stack = make_stack(max_body_bytes=4096)
    r = httpx.post(stack.url + "/carts", headers=WARRANTIES_DE, content=b"x" * 5000)
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    assert stack.legacy_app.requests == []

    def chunks():
        for _ in range(10):
            yield b"y" * 1000

    r = httpx.post(stack.url + "/carts", headers=WARRANTIES_DE, content=chunks())
    assert r.status_code == 413
    wait_until(lambda: stack.app.rt.read_ahead.held == 0, 10,
               "the chunked body's read-ahead given back")


def test_unreachable_core_fails_over_to_legacy_even_for_post(make_stack):
    stack = make_stack(core_up=False)
    r = httpx.post(stack.url + "/carts", headers=WARRANTIES_IE, json={"a": 1})
    assert r.status_code == 201
    assert r.json()["backend"] == "legacy"
    assert r.json()["body_len"] == len(b'{"a":1}')
    assert r.headers["x-checkout-backend"] == "legacy"
    assert r.headers["x-checkout-decision"].startswith("FAILOVER; rule=ie-all;")


def test_read_timeout_is_504_problem(make_stack):
    stack = make_stack(legacy_read_timeout=0.3)
    r = httpx.get(stack.url + "/_test/slow", headers=WARRANTIES_DE, timeout=10)
    assert r.status_code == 504
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 504
    assert r.headers["x-checkout-backend"] == "legacy"


def test_failure_after_the_request_was_sent_is_502_and_never_retried(make_stack, hangup_server):
    port, received = hangup_server
    stack = make_stack(core_url=f"http://127.0.0.1:{port}")
    r = httpx.post(stack.url + "/checkouts/co_chk_1/orders", headers=WARRANTIES_IE,
                   json={"payment": {"token": "tok_visa"}})
    assert r.status_code == 502
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["x-checkout-backend"] == "core"
    assert len(received) == 1 and received[0].startswith(b"POST /checkouts/co_chk_1/orders")
    assert stack.legacy_app.requests == []


def test_proxy_admin_endpoints(make_stack):
    stack = make_stack()
    httpx.get(stack.url + "/carts", headers=WARRANTIES_DE)
    health = httpx.get(stack.url + "/_strangler/healthz")
    assert health.status_code == 200 and health.json()["rules_version"] == "1"
    metrics = httpx.get(stack.url + "/metrics").text
    assert 'strangler_requests_total{backend="legacy",code="2xx",funnel="warranties",' \
           'reason="RULE"} 1.0' in metrics
    assert "strangler_request_duration_seconds_bucket" in metrics
    assert "strangler_rules_version 1.0" in metrics


def test_raw_socket_request_gets_a_response_with_decision_headers(make_stack):
    stack = make_stack()
    with socket.create_connection(("127.0.0.1", stack.proxy.port), timeout=5) as sock:
        sock.sendall(b"GET /warranties/carts HTTP/1.1\r\nHost: shop.example\r\n"
                     b"X-Country: DE\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 200")
    assert b"x-checkout-backend: legacy" in head
    assert b"x-forwarded-host" not in head


def test_only_checkout_routes_are_forwarded_by_default(make_stack):
    stack = make_stack(forward_path_prefixes=["/carts", "/checkouts", "/orders", "/healthz"])
    for path in ("/_faults", "/_downstream/orders", "/carts-admin", "/warranties/_faults"):
        r = httpx.get(stack.url + path, headers=WARRANTIES_DE)
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "application/problem+json"
    assert stack.legacy_app.requests == [] and stack.core_app.requests == []
    assert httpx.get(stack.url + "/warranties/carts/lg_1").status_code == 200
    assert httpx.get(stack.url + "/healthz").status_code == 200


def test_the_default_prefixes_cover_the_contract():
    from proxy.config import ProxySettings

    prefixes = ProxySettings().forward_path_prefixes
    assert {"/carts", "/checkouts", "/orders", "/healthz"} <= set(prefixes)
