"""Run real ASGI apps on real loopback sockets for integration tests.

In-process servers bind port 0 and report the port the kernel gave them. A process started
later on a port it is told (and started again on the same port after it died) gets a
`PortReservation`: no race with anything else running on the machine.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


def free_port() -> int:
    """A port that was free a moment ago. Racy (anyone may take it before it is used): for
    a process that must know its port in advance, hold a `PortReservation` instead."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PortReservation:
    """A loopback port kept for a server process, for as long as the reservation is open.

    A socket bound to the port with SO_REUSEADDR that never listens: the kernel gives the
    port to nobody else (no `bind(0)` returns it, a plain `bind` to it fails), while a
    server that binds with SO_REUSEADDR, as uvicorn does, can listen on it, die, and listen
    on it again."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]

    def close(self) -> None:
        self._sock.close()


@contextmanager
def reserved_port() -> Iterator[int]:
    reservation = PortReservation()
    try:
        yield reservation.port
    finally:
        reservation.close()


class ServerThread:
    """A uvicorn server running an ASGI app in a background thread with its own loop, on
    `port`, or on the port the kernel picks (port 0) when none is given."""

    def __init__(self, app: Any, port: int | None = None, **config: Any) -> None:
        self.port = port or 0
        config.setdefault("lifespan", "on")
        self.config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", **config
        )
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def start(self, timeout: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


@contextmanager
def serve(app: Any, port: int | None = None, **config: Any) -> Iterator[ServerThread]:
    """Serve `app` on 127.0.0.1 for the duration of the block."""
    server = ServerThread(app, port, **config).start()
    try:
        yield server
    finally:
        server.stop()
