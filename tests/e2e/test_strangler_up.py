"""`strangler up` end to end: a real subprocess, real backends, real sockets."""

from __future__ import annotations

import math
import os
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.conftest import REPO, Up, strangler_cmd, wait_healthy
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e

IE = {"X-Checkout-Funnel": "warranties", "X-Country": "IE"}  # warranties-pilot: 50 %


def new_cart(client: httpx.Client, headers: dict[str, str], session: str) -> httpx.Response:
    return client.post("/carts", headers={**headers, "X-Checkout-Session": session},
                       json={"country": "IE", "currency": "EUR"})


def eventually(check, within: float = 1.0) -> None:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, f"not within {within}s"
        time.sleep(0.02)


def reload_failures(url: str) -> float:
    """strangler_rules_reload_failures_total: rules files (or versions) refused so far."""
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("strangler_rules_reload_failures_total "):
            return float(line.split()[1])
    return 0.0


def test_a_whole_checkout_stays_on_one_backend(strangler_up: Up):
    with httpx.Client(base_url=strangler_up.url, timeout=10) as client:
        for _ in range(6):
            session = f"s-{uuid.uuid4().hex}"
            h = {**IE, "X-Checkout-Session": session}
            cart = client.post("/carts", headers=h, json={"country": "IE", "currency": "EUR"})
            assert cart.status_code == 201, cart.text
            backend = cart.headers["x-checkout-backend"]
            cart_id = cart.json()["id"]
            assert cart_id.startswith("co_" if backend == "core" else "lg_")
            steps = [
                client.post(f"/carts/{cart_id}/items", headers=h,
                            json={"sku": "WR-CARE-2Y", "quantity": 1}),
                client.post(f"/carts/{cart_id}/checkout", headers=h, json={
                    "email": "e2e@example.com",
                    "shipping_address": {"name": "A", "line1": "1 Main St", "city": "Cork",
                                         "postal_code": "T12", "country": "IE"}}),
            ]
            checkout_id = steps[-1].json()["id"]
            steps.append(client.post(
                f"/checkouts/{checkout_id}/orders",
                headers={**h, "Idempotency-Key": uuid.uuid4().hex},
                json={"payment": {"method": "card", "token": "tok_visa"}},
            ))
            for step in steps:
                assert step.status_code in (200, 201, 402), step.text
                assert step.headers["x-checkout-backend"] == backend
                assert step.headers["x-checkout-decision"].startswith("OWNER;")


def test_split_matches_the_rule_and_every_session_is_sticky(strangler_up: Up):
    sessions = [f"split-{i:05d}-{uuid.uuid4().hex[:8]}" for i in range(2000)]

    client = httpx.Client(base_url=strangler_up.url, timeout=10,
                          limits=httpx.Limits(max_connections=16))

    def run(session: str) -> tuple[str, str]:
        first = new_cart(client, IE, session)
        again = new_cart(client, IE, session)
        cart = client.get(f"/carts/{first.json()['id']}", headers=IE)
        assert cart.status_code == 200
        assert again.headers["x-checkout-decision"].startswith("STICKY;")
        assert again.headers["x-checkout-backend"] == cart.headers["x-checkout-backend"]
        return first.headers["x-checkout-backend"], again.headers["x-checkout-backend"]

    with client, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, sessions))
    core = sum(first == "core" for first, _ in results)
    # 50 % of 2,000: 4 standard deviations of a binomial is ±89
    sd = math.sqrt(len(sessions) * 0.25)
    assert abs(core - 1000) < 4 * sd, core
    assert all(first == again for first, again in results)  # stickiness 100 %


def test_client_decision_headers_are_discarded_and_ours_set(strangler_up: Up):
    r = httpx.post(strangler_up.url + "/carts", headers={
        **IE, "X-Checkout-Backend": "core", "X-Checkout-Decision": "RULE; rule=forged",
        "X-Checkout-Session": "forged-session-0001",
    }, json={"country": "IE", "currency": "EUR"})
    decision = r.headers["x-checkout-decision"]
    assert "forged" not in decision
    assert r.headers.get_list("x-checkout-backend") == [r.headers["x-checkout-backend"]]
    assert r.headers["via"].endswith("1.1 strangler")
    minted = httpx.post(strangler_up.url + "/carts", headers=IE,
                        json={"country": "IE", "currency": "EUR"})
    assert any(c.startswith("checkout_session=u_")
               for c in minted.headers.get_list("set-cookie"))


def test_kill_switch_from_the_cli_sends_traffic_to_legacy_within_a_second(strangler_up: Up):
    def backend() -> str:
        with httpx.Client(base_url=strangler_up.url) as client:
            return new_cart(client, IE, f"k-{uuid.uuid4().hex}").headers["x-checkout-backend"]

    strangler_up.cli("kill", "--funnel", "warranties", "--reason", "e2e drill")
    eventually(lambda: all(backend() == "legacy" for _ in range(20)))
    status = strangler_up.cli("status", "--json").stdout
    assert '"warranties"' in status and "e2e drill" in status
    strangler_up.cli("unkill", "--funnel", "warranties", "--reason", "drill over")
    eventually(lambda: any(backend() == "core" for _ in range(20)))


def test_hot_reload_and_bad_yaml(strangler_up: Up):
    original = strangler_up.rules_file.read_text()
    try:
        def share_core() -> float:
            with httpx.Client(base_url=strangler_up.url) as c:
                got = [new_cart(c, IE, f"h-{uuid.uuid4().hex}").headers["x-checkout-backend"]
                       for _ in range(20)]
            return got.count("core") / len(got)

        strangler_up.rules_file.write_text(original.replace(
            "        percent: 50\n", "        percent: 100\n", 1))
        eventually(lambda: share_core() == 1.0)
        # a broken edit is rejected; the last good rules keep serving
        failures = reload_failures(strangler_up.url)
        strangler_up.rules_file.write_text(original.replace("percent: 50", "percent: 500"))
        result = strangler_up.cli("rules", "validate", str(strangler_up.rules_file), check=False)
        assert result.returncode == 1
        assert f"{strangler_up.rules_file}:" in result.stderr.replace("\n", "")
        assert "percent" in result.stderr
        # the proof that the watcher read the broken file before we look: its refusal counted
        eventually(lambda: reload_failures(strangler_up.url) > failures, within=10)
        assert share_core() == 1.0
    finally:
        strangler_up.rules_file.write_text(original)
    eventually(lambda: share_core() < 1.0)


def test_ramp_from_the_cli_changes_the_split(strangler_up: Up):
    out = strangler_up.cli("ramp", "warranties", "--country", "PT", "--percent", "0",
                           "--reason", "e2e ramp down", "--yes").stdout
    assert "warranties / PT" in out
    pt = {"X-Checkout-Funnel": "warranties", "X-Country": "PT"}

    def all_legacy() -> bool:
        with httpx.Client(base_url=strangler_up.url) as c:
            return all(new_cart(c, pt, f"r-{uuid.uuid4().hex}").headers["x-checkout-backend"]
                       == "legacy" for _ in range(20))

    eventually(all_legacy)


def test_serve_fails_over_to_legacy_when_the_core_is_down(strangler_up: Up, tmp_path):
    legacy_url = f"http://127.0.0.1:{strangler_up.port + 2}"
    port = free_port()
    proc = subprocess.Popen([
        *strangler_cmd(), "serve", "--port", str(port), "--core-url",
        f"http://127.0.0.1:{free_port()}", "--legacy-url", legacy_url,
        "--rules", str(strangler_up.rules_file), "--db-path", str(tmp_path / "s.sqlite3"),
    ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "STRANGLER_TRUST_COUNTRY_HEADERS": "always"})  # as a CDN's
    try:
        wait_healthy(f"http://127.0.0.1:{port}/_strangler/healthz", proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            seen = [new_cart(client, IE, f"f-{uuid.uuid4().hex}") for _ in range(20)]
        assert all(r.status_code == 201 for r in seen)
        assert all(r.headers["x-checkout-backend"] == "legacy" for r in seen)
        reasons = {r.headers["x-checkout-decision"].split(";")[0] for r in seen}
        assert "FAILOVER" in reasons  # the rule chose core for about half of them
    finally:
        proc.terminate()
        proc.wait(20)


def test_up_refuses_backend_ports_that_are_taken(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        core_port = taken.getsockname()[1]
        result = subprocess.run(
            [*strangler_cmd(), "up", "--port", str(core_port - 1), "--data-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=60, check=False,
        )
    assert result.returncode == 1
    assert f"port {core_port} for the checkout core is in use" in result.stderr


def test_sigterm_stops_the_backends_too(tmp_path):
    import signal
    import socket

    for _attempt in range(5):  # port+1 or port+2 may be taken by someone else: try others
        port = free_port()
        if port >= 65000:
            continue
        proc = subprocess.Popen(
            [*strangler_cmd(), "up", "--port", str(port), "--data-dir", str(tmp_path),
             "--legacy-latency-ms", "5"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
        )
        try:
            wait_healthy(f"http://127.0.0.1:{port}/_strangler/healthz", proc)
            break
        except AssertionError:
            if proc.poll() is None:
                proc.kill()
                raise
    else:
        pytest.fail("strangler up never started")
    try:
        for backend in (port + 1, port + 2):
            wait_healthy(f"http://127.0.0.1:{backend}/healthz", proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 15
    for backend in (port + 1, port + 2):  # nothing listens any more: no orphaned backend
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", backend)) != 0:
                    break
            assert time.monotonic() < deadline, f"a backend still listens on {backend}"
            time.sleep(0.1)
