from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.processes import REPO, stop, strangler_cmd
from tests.support.servers import free_port

__all__ = ["REPO", "Up", "run_cli", "running_up", "spawn_up", "strangler_cmd", "wait_healthy"]


def run_cli(*args: str, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STRANGLER_DB_PATH": str(data_dir / "strangler.sqlite3"),
           "STRANGLER_ACTOR": "e2e"}
    result = subprocess.run([*strangler_cmd(), *args], capture_output=True, text=True,
                            env=env, timeout=60, cwd=REPO, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"strangler {' '.join(args)} failed: {result.stderr}")
    return result


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never became healthy")


def spawn_up(args: list[str], log_path: Path, env: dict[str, str],
             health: str = "/_strangler/healthz") -> tuple[subprocess.Popen[bytes], int]:
    """`strangler up ARGS` on three consecutive free ports, once `health` answers 200.
    Another test's server may take one of the ports between the pick and `up`'s bind:
    then `up` says "is in use" and exits, and it is started again on other ports (its log
    started afresh, so that it holds one run)."""
    for attempt in range(5):
        while True:
            port = free_port()
            if port < 65000:
                break
        with log_path.open("wb") as log:
            proc = subprocess.Popen([*strangler_cmd(), "up", "--port", str(port), *args],
                                    stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        try:
            wait_healthy(f"http://127.0.0.1:{port}{health}", proc)
            return proc, port
        except AssertionError as exc:
            text = log_path.read_text(errors="replace")
            if proc.poll() is None or "is in use" not in text or attempt == 4:
                stop(proc, 10)
                raise AssertionError(f"strangler up: {exc}\n{text[-3000:]}") from exc
    raise AssertionError("unreachable")


@dataclass
class Up:
    url: str
    port: int
    data_dir: Path
    rules_file: Path
    proc: subprocess.Popen[bytes]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, data_dir=self.data_dir, check=check)


@contextmanager
def running_up(data_dir: Path, rules_file: Path, legacy_latency_ms: int = 5,
               env: dict[str, str] | None = None) -> Iterator[Up]:
    """`strangler up` as a user runs it, as a subprocess, on free ports, until the block
    ends. The tests' X-Country comes from loopback, as a CDN's would (docs/reliability.md,
    Trust); `env` adds to the environment."""
    environ = {**os.environ, "STRANGLER_TRUST_COUNTRY_HEADERS": "always", **(env or {})}
    proc, port = spawn_up(
        ["--data-dir", str(data_dir), "--rules", str(rules_file),
         "--legacy-latency-ms", str(legacy_latency_ms)], data_dir / "up.log", environ)
    try:
        yield Up(f"http://127.0.0.1:{port}", port, data_dir, rules_file, proc)
    finally:
        stop(proc, 20)


@pytest.fixture(scope="module")
def strangler_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """`strangler up` with the repository's rules, shared by a test module."""
    data_dir = tmp_path_factory.mktemp("up")
    rules_file = data_dir / "checkout.yaml"
    # Legacy is made fast here (5 ms, not a monolith's 250 ms), which would make the core
    # look slow to the latency guardrail; these tests are about routing, so the guardrails
    # ask for more samples than they will ever see (test_guardrail_monitor covers trips).
    text = (REPO / "rules" / "checkout.yaml").read_text()
    rules_file.write_text(text.replace("min_samples: 100 ", "min_samples: 1000000 ", 1))
    assert "min_samples: 1000000" in rules_file.read_text()
    with running_up(data_dir, rules_file) as up:
        yield up
