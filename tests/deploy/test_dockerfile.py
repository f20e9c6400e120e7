"""The Dockerfile: hadolint clean, and what docs/deploy.md says the image is; the health
probe it runs (deploy/docker/healthcheck.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.deploy.helm import REPO, ToolMissing, hadolint_binary, missing

DOCKERFILE = REPO / "Dockerfile"
HEALTHCHECK = REPO / "deploy" / "docker" / "healthcheck.py"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), " ".join(rest.split())))
    return result


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_hadolint_finds_nothing() -> None:
    try:
        hadolint = hadolint_binary()
    except ToolMissing as exc:
        missing(str(exc))
    done = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_base_image_is_a_build_argument_and_the_build_is_multi_stage() -> None:
    steps = instructions()
    assert steps[0] == ("ARG", "PYTHON_IMAGE=python:3.11-slim")
    froms = [args for word, args in steps if word == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE}"]
    builder = " ".join(args for word, args in steps[: steps.index(("FROM", froms[1]))]
                       if word == "RUN")
    assert "pip wheel --wheel-dir /wheels" in builder


def test_final_stage_installs_the_wheels_without_compilers_or_pip() -> None:
    runs = [args for word, args in final_stage() if word == "RUN"]
    assert len(runs) == 1
    [run] = runs
    assert "--mount=type=bind,from=builder,source=/wheels" in run
    assert "--no-index" in run and "--find-links /wheels" in run
    assert '"checkout-strangler[otel]"' in run  # tracing can be switched on in the image
    assert "uninstall --yes" in run and " pip setuptools" in run
    assert not re.search(r"apt-get|gcc|build-essential|\bmake\b", run)
    assert not [args for word, args in final_stage() if word == "COPY" and "--from" in args]


def test_runs_as_uid_65532_with_state_under_the_volume() -> None:
    stage = final_stage()
    assert ("USER", "65532:65532") in stage
    assert ("VOLUME", '["/var/lib/strangler"]') in stage
    env = " ".join(args for word, args in stage if word == "ENV")
    settings = dict(item.split("=", 1) for item in env.split())
    assert settings["PYTHONDONTWRITEBYTECODE"] == "1"
    assert settings["STRANGLER_DB_PATH"] == "/var/lib/strangler/strangler.sqlite3"
    assert settings["STRANGLER_STATE_CACHE"] == "/var/lib/strangler/last-known-state.json"
    assert settings["HOME"] == "/var/lib/strangler"


def test_entry_point_is_strangler_serve_and_the_healthcheck_needs_no_curl() -> None:
    stage = dict(final_stage())
    assert json.loads(stage["ENTRYPOINT"]) == ["strangler", "serve"]
    cmd = json.loads(stage["CMD"])
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    check = stage["HEALTHCHECK"]
    command = json.loads(check.split(" CMD ", 1)[1])
    assert command == ["strangler-healthcheck", "/livez"]  # never the store's health
    assert "curl" not in DOCKERFILE.read_text() and "wget" not in DOCKERFILE.read_text()


def test_every_package_is_copied_and_let_through_dockerignore() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = sorted(p.removesuffix("*") for p in patterns)
    copies = {args.split()[0] for word, args in instructions() if word == "COPY"}
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignore  # deny by default: no .venv, no var/, no .git in the context
    for package in packages:
        assert package in copies, f"the Dockerfile does not COPY {package}"
        assert f"!{package}/" in ignore, f".dockerignore keeps out {package}"


class _Handler(BaseHTTPRequestHandler):
    status = 200
    token = "s3cret"

    def do_GET(self) -> None:
        type(self).seen = self.path  # type: ignore[attr-defined]
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            self.send_response(401)
        else:
            self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def admin_server(status: int) -> Iterator[tuple[int, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def probe(env: dict[str, str], *args: str) -> int:
    done = subprocess.run([sys.executable, str(HEALTHCHECK), *args], env=env,
                          capture_output=True, text=True, timeout=30, check=False)
    return done.returncode


@pytest.mark.parametrize("status, token, code", [
    (200, "s3cret", 0), (503, "s3cret", 1), (200, "wrong", 1),
], ids=["healthy", "degraded", "wrong-token"])
def test_healthcheck_asks_the_admin_port_with_the_token(status: int, token: str,
                                                        code: int) -> None:
    with admin_server(status) as (port, handler):
        env = {"STRANGLER_ADMIN_PORT": str(port), "STRANGLER_HEALTHCHECK_PORT": "1",
               "STRANGLER_ADMIN_TOKEN": token}
        assert probe(env, "/_strangler/state") == code
        assert handler.seen == "/_strangler/state"  # type: ignore[attr-defined]


def test_healthcheck_uses_the_main_port_without_an_admin_port() -> None:
    with admin_server(200) as (port, handler):
        env = {"STRANGLER_HEALTHCHECK_PORT": str(port), "STRANGLER_ADMIN_TOKEN": "s3cret"}
        assert probe(env) == 0
        assert handler.seen == "/livez"  # type: ignore[attr-defined]


def test_healthcheck_fails_when_nothing_listens() -> None:
    with admin_server(200) as (port, _):
        pass
    assert probe({"STRANGLER_HEALTHCHECK_PORT": str(port)}) == 1


def test_healthcheck_imports_nothing_of_the_project() -> None:
    source = HEALTHCHECK.read_text()
    imports = re.findall(r"^(?:from|import) (\S+)", source, re.MULTILINE)
    assert all(name.split(".")[0] in sys.stdlib_module_names or name == "__future__"
               for name in imports), imports
