"""Real processes for end-to-end tests: `strangler serve`, the core, the legacy stub.

Every process gets a loopback port reserved for it (`PortReservation`: nobody else can take
it while the block runs), a log file, and is stopped (SIGTERM, then SIGKILL) when its block
ends. A test that restarts a process on the same port holds the reservation itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.support.backends import EchoBackend
from tests.support.servers import PortReservation

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def strangler_cmd() -> list[str]:
    exe = shutil.which("strangler", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "cli.main"]


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without STRANGLER_/CHECKOUT_CORE_/LEGACY_STUB_ settings."""
    prefixes = ("STRANGLER_", "CHECKOUT_CORE_", "LEGACY_STUB_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra)
    return env


def wait_until(check: Callable[[], T], timeout: float, message: str) -> T:
    """Poll `check` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(0.02)
    return value


def http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        return httpx.get(url, headers=headers, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class ProxyProcess(Process):
    admin_port: int | None = None
    admin_headers: dict[str, str] = field(default_factory=dict)

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port or self.port}"

    def metrics(self) -> str:
        return httpx.get(self.admin_url + "/metrics", headers=self.admin_headers).text


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)


@contextmanager
def strangler_serve(
    tmp: Path, core_url: str, legacy_url: str, rules_file: Path | None = None,
    env: dict[str, str] | None = None, admin_port: int | None = None,
    admin_token: str | None = None, port: int | None = None,
) -> Iterator[ProxyProcess]:
    """`strangler serve` as an operator runs it, on `port` or a port reserved for it."""
    reservation = PortReservation() if port is None else None
    port = port or reservation.port  # type: ignore[union-attr]
    args = [*strangler_cmd(), "serve", "--core-url", core_url, "--legacy-url", legacy_url,
            "--port", str(port), "--db-path", str(tmp / f"control-{port}.sqlite3")]
    if rules_file is not None:
        args += ["--rules", str(rules_file)]
    if admin_port is not None:
        args += ["--admin-port", str(admin_port)]
    # the tests' X-Country comes from loopback, as a CDN's would (docs/reliability.md, Trust)
    extra = {"STRANGLER_LOG_LEVEL": "warning", "STRANGLER_TRUST_COUNTRY_HEADERS": "always",
             **(env or {})}
    if admin_token:
        extra["STRANGLER_ADMIN_TOKEN"] = admin_token
    proc = spawn(args, clean_env(**extra), tmp / f"serve-{port}.log")
    headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
    served = ProxyProcess(proc, port, tmp / f"serve-{port}.log", admin_port, headers)
    try:
        wait_until(lambda: proc.poll() is not None or http_ok(
            served.admin_url + "/_strangler/healthz", headers), 30, "strangler serve")
        assert proc.poll() is None, f"strangler serve exited:\n{served.log_text()}"
        yield served
    finally:
        stop(proc)
        if reservation is not None:
            reservation.close()


@contextmanager
def backend_process(
    module: str, tmp: Path, env: dict[str, str] | None = None, port: int | None = None,
    args: list[str] | None = None, ready: str = "/healthz", may_exit: bool = False,
) -> Iterator[Process]:
    """`python -m MODULE --host 127.0.0.1 --port P` (the core, the legacy stub, ...), once
    it answers `ready`. With `may_exit`, a process that exits first is handed over too:
    its exit is what the test waits for (a crash point it may reach before it looked
    ready)."""
    reservation = PortReservation() if port is None else None
    port = port or reservation.port  # type: ignore[union-attr]
    log = tmp / f"{module.rsplit('.', 1)[-1]}-{port}.log"
    proc = spawn([sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port),
                  *(args or [])], clean_env(**(env or {})), log)
    served = Process(proc, port, log)
    try:
        wait_until(lambda: proc.poll() is not None or http_ok(served.url + ready), 30, module)
        assert may_exit or proc.poll() is None, f"{module} exited:\n{served.log_text()}"
        yield served
    finally:
        stop(proc)
        if reservation is not None:
            reservation.close()


@dataclass
class RecordingBackend:
    """EchoBackend that also records every request the moment its head arrives, before
    the body is read: proof that nothing at all reached the upstream."""

    name: str
    arrived: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.echo = EchoBackend(self.name)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.arrived.append({
                "method": scope["method"], "path": scope["path"],
                "raw_path": scope.get("raw_path", b"").decode("latin-1"),
                "headers": [(k.decode("latin-1"), v.decode("latin-1"))
                            for k, v in scope["headers"]],
            })
        await self.echo(scope, receive, send)

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.echo.requests


def raw_exchange(port: int, data: bytes, timeout: float = 5.0,
                 source: str | None = None) -> tuple[bytes, bool]:
    """Send `data` on a fresh connection and read until the server closes it (or the
    timeout). Returns (everything received, whether the server closed the connection)."""
    src = (source, 0) if source else None
    with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                  source_address=src) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return received, False
            except ConnectionResetError:
                return received, True
            if not chunk:
                return received, True
            received += chunk
        return received, False


def status_of(response: bytes) -> int | None:
    if not response.startswith(b"HTTP/1."):
        return None
    return int(response.split(b" ", 2)[1])
