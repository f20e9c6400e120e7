"""OpenTelemetry tracing (the `[otel]` extra, `STRANGLER_OTEL`), on real sockets.

The proxy, and in one test the checkout core and the legacy stub, export over OTLP HTTP to
a receiver of the test's own (`tests.support.otlp`), which decodes what arrives. Without
the extra these tests skip, and fail under CI (`tests.support.ci`); the two that check
what happens with tracing off, or without the extra, run everywhere.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import RULES
from tests.support.ci import skip_or_fail
from tests.support.otlp import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.support.processes import backend_process, strangler_serve, wait_until

REPO = Path(__file__).resolve().parents[2]
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
TRACESTATE = "vendor=abc,other=1"
UNIT = "u_0123456789abcdef01234567"
WARRANTIES_IE = {"X-Checkout-Funnel": "warranties", "X-Country": "IE",
                 "X-Checkout-Session": UNIT}
WAIT = 30.0  # seconds: spans leave in batches from a background thread


def _has_extra() -> bool:
    try:
        return all(importlib.util.find_spec(m) is not None for m in (
            "opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http",
            "opentelemetry.instrumentation.asgi", "opentelemetry.proto.trace.v1"))
    except ModuleNotFoundError:
        return False


@pytest.fixture
def otel() -> None:
    if not _has_extra():
        skip_or_fail("the [otel] extra is not installed: pip install -e '.[otel]'")


@pytest.fixture
def receiver(otel: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    """A receiver, and the standard variables that point this process's exporters at it
    (read when a proxy is created)."""
    with otlp_receiver() as received:
        for name, value in _otel_env(received).items():
            monkeypatch.setenv(name, value)
        for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER",
                     "OTEL_TRACES_SAMPLER_ARG", "OTEL_SDK_DISABLED",
                     "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            monkeypatch.delenv(name, raising=False)
        yield received


def _otel_env(received: OtlpReceiver) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": received.url, "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}


def _spans(received: OtlpReceiver, trace_id: str, count: int) -> list[ReceivedSpan]:
    return wait_until(lambda: (spans := received.trace(trace_id)) and len(spans) >= count
                      and spans, WAIT, f"{count} spans of trace {trace_id}")


def _one(spans: list[ReceivedSpan], **match: Any) -> ReceivedSpan:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    assert len(found) == 1, f"{len(found)} spans with {match} in {spans}"
    return found[0]


def _traceparent(seen: dict[str, Any]) -> tuple[str, str]:
    """(trace id, parent span id) of the one traceparent a backend received."""
    values = [v for k, v in seen["headers"] if k == "traceparent"]
    assert len(values) == 1, values
    _, trace_id, parent, _flags = values[0].split("-")
    return trace_id, parent


def _unit_hash(unit: str) -> str:
    return hashlib.blake2b(unit.encode(), digest_size=8).hexdigest()


def test_a_proxied_request_is_a_server_span_a_client_span_and_a_decision_event(
    receiver: OtlpReceiver, make_stack: Any,
) -> None:
    stack = make_stack(otel=True)
    r = httpx.post(stack.url + "/carts", json={"country": "IE"}, headers={
        **WARRANTIES_IE, "traceparent": TRACEPARENT, "tracestate": TRACESTATE,
        "User-Agent": "tracing-test"})
    assert r.status_code == 201 and r.headers["x-checkout-backend"] == "core"

    spans = _spans(receiver, CLIENT_TRACE, 2)
    server = _one(spans, kind="SERVER")
    client = _one(spans, kind="CLIENT")
    # the client's trace goes on: its span is the server span's parent
    assert server.parent_id == CLIENT_SPAN and server.service == "strangler-proxy"
    assert server.trace_state == TRACESTATE
    assert server.name == "POST /carts" and server.status == "UNSET"
    port = int(stack.url.rsplit(":", 1)[1])
    assert server.attributes == {
        "http.request.method": "POST", "url.path": "/carts", "url.scheme": "http",
        "http.route": "/carts", "http.response.status_code": 201,
        "server.address": "127.0.0.1", "server.port": port, "client.address": "127.0.0.1",
        "network.protocol.version": "1.1",
        "user_agent.original": "tracing-test",
        "strangler.funnel": "warranties", "strangler.backend": "core",
        "strangler.decision.reason": "RULE", "strangler.country": "IE",
    }
    event = server.event("feature_flag.evaluation")
    assert event == {
        "feature_flag.key": "warranties", "feature_flag.provider.name": "checkout-strangler",
        "feature_flag.result.variant": "core", "feature_flag.result.reason": "split",
        "feature_flag.version": "1", "feature_flag.context.id": _unit_hash(UNIT),
        "strangler.decision.reason": "RULE",
        **({"strangler.decision.rule": "ie-all"}
           if "strangler.decision.rule" in event else {}),
    }
    assert UNIT not in json.dumps([s.attributes for s in spans] + [s.events for s in spans])

    # the upstream call is the server span's child, and the backend continues from it
    assert client.parent_id == server.span_id and client.name == "POST"
    core_port = int(stack.core.url.rsplit(":", 1)[1])
    assert client.attributes == {
        "http.request.method": "POST", "server.address": "127.0.0.1", "server.port": core_port,
        "url.full": f"{stack.core.url}/carts", "http.response.status_code": 201,
        "network.protocol.version": "1.1", "strangler.backend": "core",
    }
    seen = r.json()
    assert _traceparent(seen) == (CLIENT_TRACE, client.span_id)  # not the client's own
    assert [v for k, v in seen["headers"] if k == "tracestate"] == [TRACESTATE]


def test_a_failover_is_two_client_spans_and_legacy_continues_the_second(
    receiver: OtlpReceiver, make_stack: Any,
) -> None:
    stack = make_stack(otel=True, core_up=False)
    r = httpx.post(stack.url + "/carts", json={}, headers={
        **WARRANTIES_IE, "traceparent": TRACEPARENT})
    assert r.status_code == 201 and r.headers["x-checkout-backend"] == "legacy"

    spans = _spans(receiver, CLIENT_TRACE, 3)
    server = _one(spans, kind="SERVER")
    core = _one(spans, kind="CLIENT", status="ERROR")
    legacy = _one(spans, kind="CLIENT", status="UNSET")
    assert core.parent_id == legacy.parent_id == server.span_id
    assert core.attributes["error.type"] == "connect"
    assert core.attributes["strangler.backend"] == "core"
    assert "http.response.status_code" not in core.attributes
    assert legacy.attributes["strangler.backend"] == "legacy"
    assert legacy.attributes["http.response.status_code"] == 201
    assert _traceparent(r.json()) == (CLIENT_TRACE, legacy.span_id)
    event = server.event("feature_flag.evaluation")  # one decision: the final one
    assert event["feature_flag.result.variant"] == "legacy"
    assert event["feature_flag.result.reason"] == "error"
    assert event["strangler.decision.reason"] == "FAILOVER"
    assert server.attributes["http.response.status_code"] == 201
    assert "error.type" not in server.attributes


def test_routes_name_spans_without_ids_and_failures_set_error_type(
    receiver: OtlpReceiver, make_stack: Any,
) -> None:
    stack = make_stack(otel=True, core_up=False)
    assert httpx.get(stack.url + "/_strangler/state").status_code == 200  # admin: untraced
    # a core id: the owner; unreachable, and never failed over (legacy cannot serve it)
    r = httpx.get(stack.url + "/warranties/carts/co_abc/items/sku-1")
    assert r.status_code == 503
    # no traceparent: the proxy starts the trace
    r2 = httpx.get(stack.url + "/orders/lg_123", headers={"X-Checkout-Funnel": "warranties"})
    assert r2.status_code == 200

    def servers() -> list[ReceivedSpan]:
        found = [s for s in receiver.snapshot() if s.kind == "SERVER"]
        return found if len(found) >= 2 else []

    order, owner = sorted(wait_until(servers, WAIT, "two server spans"), key=lambda s: s.name)
    assert len(servers()) == 2  # spans leave in the order they end: none for the admin one
    assert owner.name == "GET /warranties/carts/{cart_id}/items/{sku}"
    assert owner.attributes["http.route"] == "/warranties/carts/{cart_id}/items/{sku}"
    assert owner.attributes["url.path"] == "/warranties/carts/co_abc/items/sku-1"
    assert owner.attributes["error.type"] == "503" and owner.status == "ERROR"
    flag = owner.event("feature_flag.evaluation")
    assert (flag["feature_flag.result.reason"], flag["strangler.decision.reason"]) == (
        "targeting_match", "OWNER")
    assert order.name == "GET /orders/{order_id}" and order.parent_id is None
    assert _traceparent(r2.json()) == (order.trace_id, _one(
        receiver.trace(order.trace_id), kind="CLIENT").span_id)


def test_an_unsampled_request_records_nothing_and_still_propagates(
    receiver: OtlpReceiver, make_stack: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    stack = make_stack(otel=True)
    r = httpx.post(stack.url + "/carts", json={}, headers={
        **WARRANTIES_IE, "traceparent": TRACEPARENT})
    assert r.status_code == 201
    values = [v for k, v in r.json()["headers"] if k == "traceparent"]
    assert len(values) == 1
    _, trace_id, parent, flags = values[0].split("-")
    assert (trace_id, flags) == (CLIENT_TRACE, "00") and parent != CLIENT_SPAN
    assert stack.app.provider.force_flush(10_000)  # whatever was queued is exported now
    assert receiver.snapshot() == []


def test_behind_a_trusted_proxy_the_client_is_the_forwarded_address(
    receiver: OtlpReceiver, make_stack: Any,
) -> None:
    stack = make_stack(otel=True, trusted_proxies=["127.0.0.1/32", "10.0.0.0/8"])
    r = httpx.get(stack.url + "/carts", headers={
        "traceparent": TRACEPARENT, "X-Forwarded-For": "198.51.100.7, 203.0.113.9, 10.1.2.3",
        "Host": "shop.example:8443"})
    assert r.status_code == 200
    server = _one(_spans(receiver, CLIENT_TRACE, 2), kind="SERVER")
    assert server.attributes["client.address"] == "203.0.113.9"  # the last untrusted hop
    assert server.attributes["network.peer.address"] == "127.0.0.1"
    assert (server.attributes["server.address"], server.attributes["server.port"]) == (
        "shop.example", 8443)


def test_the_checkout_core_and_the_legacy_stub_join_the_trace(
    receiver: OtlpReceiver, tmp_path: Path,
) -> None:
    """`strangler serve` and the two real backends, each exporting to the receiver: proxy
    server span -> proxy client span -> backend server span, in the client's trace."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    env = _otel_env(receiver)
    with backend_process("checkout_core", tmp_path, env={
                **env, "CHECKOUT_CORE_OTEL": "on",
                "CHECKOUT_CORE_DB_PATH": str(tmp_path / "core.sqlite3")}) as core, \
            backend_process("legacy_stub", tmp_path, env={
                **env, "LEGACY_STUB_OTEL": "on", "LEGACY_STUB_LATENCY_MS": "0",
                "LEGACY_STUB_LATENCY_JITTER_MS": "0"}) as legacy, \
            strangler_serve(tmp_path, core.url, legacy.url, rules,
                            env={**env, "STRANGLER_OTEL": "on"}) as proxy:
        for country, trace_id, service in (("IE", CLIENT_TRACE, "checkout-core"),
                                           ("DE", "a" * 32, "legacy-stub")):
            r = httpx.post(proxy.url + "/carts", json={"country": country, "currency": "EUR"},
                           headers={"X-Checkout-Funnel": "warranties", "X-Country": country,
                                    "traceparent": f"00-{trace_id}-{CLIENT_SPAN}-01"})
            assert r.status_code == 201, r.text
            spans = _spans(receiver, trace_id, 3)
            server = _one(spans, service="strangler-proxy", kind="SERVER")
            client = _one(spans, service="strangler-proxy", kind="CLIENT")
            backend = _one(spans, service=service, kind="SERVER")
            assert server.parent_id == CLIENT_SPAN
            assert client.parent_id == server.span_id
            assert backend.parent_id == client.span_id
            assert backend.name == "POST /carts"
            assert backend.attributes["http.route"] == "/carts"
            assert backend.attributes["http.response.status_code"] == 201
            assert client.attributes["server.port"] == int(
                (core if service == "checkout-core" else legacy).url.rsplit(":", 1)[1])
        cart = r.json()["id"]
        r = httpx.get(f"{proxy.url}/carts/{cart}", headers={"X-Checkout-Funnel": "warranties",
                                                              "traceparent": TRACEPARENT})
        assert r.status_code == 200
        # the cart is legacy's (OWNER): both name the route, neither names the id
        named = wait_until(lambda: {s.service for s in receiver.trace(CLIENT_TRACE)
                                    if s.name == "GET /carts/{cart_id}"} >= {
                                        "strangler-proxy", "legacy-stub"}, WAIT,
                           "the proxy's and the legacy stub's spans of GET /carts/{cart_id}")
        assert named


def test_with_tracing_off_the_proxy_loads_nothing_of_opentelemetry(tmp_path: Path) -> None:
    """A fresh interpreter creates the proxy with its defaults, serves a request through
    the hot path, and lists its modules."""
    script = textwrap.dedent(f"""
        import asyncio, json, sys
        from proxy.config import ProxySettings
        from proxy.main import create_app
        import cli.main  # what `strangler serve` loads too

        app = create_app(ProxySettings(
            core_url="http://127.0.0.1:9", legacy_url="http://127.0.0.1:9",
            db_path={str(tmp_path / "c.sqlite3")!r}, state_cache=""))

        async def main():
            lifespan = asyncio.Queue()
            for kind in ("lifespan.startup", "lifespan.shutdown"):
                lifespan.put_nowait({{"type": kind}})
            sent = []
            async def send(message):
                sent.append(message)
            done = asyncio.Event()
            async def lifespan_send(message):
                if message["type"] == "lifespan.startup.complete":
                    done.set()
            task = asyncio.create_task(app({{"type": "lifespan"}}, lifespan.get, lifespan_send))
            await done.wait()
            async def receive():
                return {{"type": "http.request", "body": b"", "more_body": False}}
            scope = {{"type": "http", "method": "GET", "path": "/carts", "raw_path": b"/carts",
                     "query_string": b"", "headers": [(b"host", b"proxy")],
                     "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80),
                     "scheme": "http", "http_version": "1.1"}}
            await app(scope, receive, send)
            await task
            return sent[0]["status"]

        status = asyncio.run(main())
        print(json.dumps({{"status": status, "type": type(app).__name__,
                          "modules": sorted(sys.modules)}}))
    """)
    env = {k: v for k, v in __import__("os").environ.items()
           if not k.startswith(("STRANGLER_", "OTEL_"))}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=REPO, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["type"] == "ProxyApp" and out["status"] == 503  # served, by the hot path
    loaded = [m for m in out["modules"] if m.split(".")[0] == "opentelemetry"
              or m in ("proxy.tracing", "otelsetup.provider", "otelsetup.asgi")]
    assert loaded == []


def test_tracing_without_the_extra_is_a_clear_error(tmp_path: Path) -> None:
    """A fresh interpreter in which opentelemetry cannot be imported: the app refuses to
    start with STRANGLER_OTEL on, and `strangler serve` says so before starting uvicorn."""
    block = "import sys; sys.modules['opentelemetry'] = None\n"
    create = block + textwrap.dedent(f"""
        from proxy.config import ProxySettings
        from proxy.main import create_app
        create_app(ProxySettings(otel=True, db_path={str(tmp_path / "c.sqlite3")!r}))
    """)
    done = subprocess.run([sys.executable, "-c", create], capture_output=True, text=True,
                          timeout=60, cwd=REPO, check=False)
    assert done.returncode != 0
    assert ("TracingUnavailable: STRANGLER_OTEL is on but the OpenTelemetry extra is not "
            "installed: pip install 'checkout-strangler[otel]'") in done.stderr

    serve = block + "from cli.main import app\napp()\n"
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", serve, "serve", "--port", "1", "--db-path",
         str(tmp_path / "s.sqlite3")], capture_output=True, text=True, timeout=60, cwd=REPO,
        env={**env, "STRANGLER_OTEL": "on"}, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    said = " ".join((done.stdout + done.stderr).split())
    assert "pip install 'checkout-strangler[otel]'" in said and "Traceback" not in said


@pytest.mark.timeout(90)
def test_the_benchmark_compares_tracing_on_and_off(otel: None, tmp_path: Path) -> None:
    """`python -m loadtests.bench --otel` for a moment: full and full-otel in one run, the
    traced proxy's spans counted by the discard receiver (docs/benchmarks.md)."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "loadtests.bench", "--duration", "0.5", "--warmup", "0.1",
         "-c", "4", "--targets", "full", "--otel", "--loadgen", "python", "--upstream",
         "python", "--nginx", "off", "--json-out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=80, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OpenTelemetry tracing: full-otel (on, 100% sampled) vs full (off)" in done.stdout
    report = json.loads(out.read_text())
    assert {p["target"] for p in report["points"]} == {"full", "full-otel"}
    assert all(p["errors"] == 0 and p["non_2xx"] == 0 for p in report["points"])
    (row,) = report["tracing"]["rows"]
    assert row["concurrency"] == 4 and row["rps_on"] > 0 and row["rps_off"] > 0
    exported = report["tracing"]["exported"]
    # every measured request of full-otel made two spans (server, client), and they arrived
    assert exported["spans"] >= 2 * report["tracing"]["requests_on"] > 0
    assert all(c["target"] == "full" for c in report["checks"])  # the bar is tracing off
