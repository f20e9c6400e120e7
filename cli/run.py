"""`strangler up` (the whole stack on one machine) and `strangler serve` (the proxy alone)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from cli.common import EXIT_USAGE, RedisUrl, console, fail

# uvicorn and the proxy are imported inside the commands that run them: the control
# commands (`strangler kill`, ...) load no data plane.

Host = Annotated[str, typer.Option("--host", help="Address to listen on.")]
Port = Annotated[int, typer.Option("--port", min=1, max=65535, help="Proxy port.")]
RulesOpt = Annotated[Path | None, typer.Option(
    "--rules", help="Rules YAML to import and watch (default: rules/checkout.yaml, else the "
    "packaged sample).")]
ServeRulesOpt = Annotated[Path | None, typer.Option(
    "--rules", envvar="STRANGLER_RULES_FILE",
    help="Rules YAML to import and watch (default: none: the proxy routes by the rules "
    "already in the control store, `strangler rules apply` puts them there).")]
AdminPort = Annotated[int | None, typer.Option(
    "--admin-port", envvar="STRANGLER_ADMIN_PORT", min=1, max=65535,
    help="Serve /metrics and /_strangler/* on this port only (404 on the main port). "
    "Set STRANGLER_ADMIN_TOKEN to require 'Authorization: Bearer TOKEN'.")]
AdminHost = Annotated[str, typer.Option("--admin-host", help="Address of the admin port.")]
LogFormat = Literal["text", "json"]
LogFormatOpt = Annotated[LogFormat, typer.Option(
    "--log-format", envvar="STRANGLER_LOG_FORMAT",
    help="Log lines on stderr: text, or json (one object a line: timestamp, level, logger, "
    "message and the record's fields); `up` passes it to the core and the legacy stub. "
    "The proxy's access log is STRANGLER_ACCESS_LOG (off, on, or a sample rate such as "
    "0.01).")]

LOOPBACK = '["127.0.0.1/32", "::1/128"]'
PACKAGED_RULES = Path(__file__).resolve().parent.parent / "proxy" / "sample_rules.yaml"


def default_rules() -> Path:
    local = Path("rules/checkout.yaml")
    return local if local.exists() else PACKAGED_RULES


def _proxy_logging(log_format: LogFormat) -> dict[str, Any]:
    """The proxy's own log (the CLI's commands log nothing without --verbose): warnings and
    errors of the strangler.* loggers on stderr, with uvicorn's (STRANGLER_LOG_LEVEL) and
    the access log, in `log_format` (`logformat`). Applied here, and returned for uvicorn
    to apply in each worker process."""
    import logging
    import logging.config

    import logformat

    root = logging.getLogger()
    verbose = any(not isinstance(h, logging.NullHandler) for h in root.handlers)
    config = logformat.logging_config(
        log_format, level=logging.getLevelName(root.level) if verbose else "WARNING",
        uvicorn_level=os.environ.get("STRANGLER_LOG_LEVEL", "info"),
        loggers={"strangler.cli": "INFO"})
    logging.config.dictConfig(config)
    logging.captureWarnings(True)
    return config


def _say(log_format: LogFormat, message: str, warning: bool = False) -> None:
    """Tell the operator: on the console in text, as a log line (logger strangler.cli) in
    json, so that every line the process writes is JSON."""
    if log_format == "json":
        import logging

        logging.getLogger("strangler.cli").log(
            logging.WARNING if warning else logging.INFO, " ".join(message.split()))
    else:
        console.print(message)


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc}")
    sock.set_inheritable(True)
    return sock


def _run_proxy(
    host: str, port: int, workers: int, env: dict[str, str],
    admin: tuple[str, int] | None = None, log_format: LogFormat = "text",
) -> None:
    """uvicorn on httptools with the proxy's protocol limits (UVICORN_OPTIONS); with
    `admin`, a second listening socket of the same server(s) for the admin paths."""
    import uvicorn

    from proxy.main import UVICORN_OPTIONS

    log_config = _proxy_logging(log_format)
    env = {**env, "STRANGLER_LOG_FORMAT": log_format}
    if admin is not None:
        env = {**env, "STRANGLER_ADMIN_PORT": str(admin[1])}
    admin_host = admin[0] if admin is not None else host
    if admin_host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get(
        "STRANGLER_ADMIN_TOKEN"
    ):
        _say(log_format, f"warning: /metrics and /_strangler/* are reachable on {admin_host} "
             "without a token; set STRANGLER_ADMIN_TOKEN (and --admin-port)", warning=True)
    os.environ.update(env)
    _refuse_bad_settings()
    problem = _tracing_problem()
    if problem is not None:
        from rich.markup import escape

        fail(escape(problem))  # its "[otel]" is no markup
    # uvicorn's own access log stays off: the proxy's is STRANGLER_ACCESS_LOG
    options: dict[str, Any] = {
        "factory": True, "host": host, "port": port, "workers": workers,
        "log_level": os.environ.get("STRANGLER_LOG_LEVEL", "info"), "access_log": False,
        "log_config": log_config, "loop": "uvloop", "timeout_graceful_shutdown": 10,
        **UVICORN_OPTIONS,
    }
    if admin is None:
        uvicorn.run("proxy.main:create_app", **options)
        return
    sockets = [_listen(host, port), _listen(*admin)]
    config = uvicorn.Config("proxy.main:create_app", **options)
    _say(log_format, f"proxy on http://{host}:{port}, admin on http://{admin[0]}:{admin[1]}")
    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=sockets).run()
        return
    server = uvicorn.Server(config)
    server.run(sockets=sockets)
    if not server.started:
        raise typer.Exit(3)


def serve(
    core_url: Annotated[str, typer.Option(envvar="STRANGLER_CORE_URL", help="Core URL.")]
    = "http://127.0.0.1:8081",
    legacy_url: Annotated[str, typer.Option(envvar="STRANGLER_LEGACY_URL", help="Legacy URL.")]
    = "http://127.0.0.1:8082",
    rules: ServeRulesOpt = None,
    host: Host = "127.0.0.1", port: Port = 8080,
    workers: Annotated[int, typer.Option(help="Worker processes (share state via Redis).")] = 1,
    db_path: Annotated[str, typer.Option(envvar="STRANGLER_DB_PATH")] = "var/strangler.sqlite3",
    redis_url: RedisUrl = None,
    admin_port: AdminPort = None, admin_host: AdminHost = "127.0.0.1",
    log_format: LogFormatOpt = "text",
) -> None:
    """Run the proxy alone in front of two backends given by URL.

    Example: strangler serve --core-url http://core:8081 --legacy-url http://legacy:8082
    """
    if workers > 1 and not redis_url:
        fail("--workers > 1 needs --redis-url: workers share sticky state through Redis", 2)
    env = {"STRANGLER_CORE_URL": core_url, "STRANGLER_LEGACY_URL": legacy_url,
           "STRANGLER_DB_PATH": db_path}
    if rules is not None:
        env["STRANGLER_RULES_FILE"] = str(rules)
    if redis_url:
        env["STRANGLER_REDIS_URL"] = redis_url
    _run_proxy(host, port, workers, env, _admin(admin_host, admin_port), log_format)


def _refuse_bad_settings() -> None:
    """Exit 2 with a sentence per STRANGLER_* setting the proxy would refuse."""
    problem = _settings_problem()
    if problem is not None:
        from rich.markup import escape

        fail(escape(problem), EXIT_USAGE)


def _settings_problem() -> str | None:
    """What the proxy would refuse of its STRANGLER_* settings, one sentence per setting
    (its worker would otherwise die in a traceback after the servers started)."""
    from pydantic import ValidationError

    from proxy.config import ProxySettings

    try:
        ProxySettings()
    except ValidationError as exc:
        return "bad proxy settings: " + "; ".join(
            f"STRANGLER_{'_'.join(str(p) for p in e['loc']).upper()}={e.get('input')!r}: "
            f"{e['msg']}" for e in exc.errors())
    return None


def _tracing_problem() -> str | None:
    """STRANGLER_OTEL on without the [otel] extra, said before uvicorn starts (rather than
    as each worker's traceback)."""
    from pydantic import TypeAdapter, ValidationError

    import otelsetup

    try:
        on = TypeAdapter(bool).validate_python(os.environ.get("STRANGLER_OTEL", "off"))
    except ValidationError:
        return None  # the proxy's settings say what is wrong with it
    return otelsetup.problem("STRANGLER_OTEL") if otelsetup.enabled(on) else None


def _admin(host: str, port: int | None) -> tuple[str, int] | None:
    return (host, port) if port is not None else None


_LOCKS: list[object] = []  # held open for the life of the process


def _lock_data_dir(data_dir: Path) -> None:
    """One `strangler up` per data directory: two would share its SQLite stores."""
    import fcntl

    handle = (data_dir / "strangler-up.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        fail(f"another `strangler up` (pid {holder}) uses --data-dir {data_dir.absolute()}: "
             "stop it, or give this one another --data-dir")
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    _LOCKS.append(handle)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _backend(module: str, port: int, env: dict[str, str], name: str,
             log_format: LogFormat = "text") -> Iterator[str]:
    url = f"http://127.0.0.1:{port}"
    if not _port_free(port):  # else the health check would pass against a stranger
        fail(f"port {port} for the {name} is in use (the proxy takes --port, the core "
             "--port + 1, the legacy stub --port + 2): pick another --port")
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port),
         "--log-format", log_format],
        env={**os.environ, **env},
    )
    import httpx  # not at the top: the proxy process of `serve` does without it (~8 MB)

    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                fail(f"{name} exited with code {proc.returncode} (is port {port} free?)")
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                fail(f"{name} did not become healthy on {url}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def up(
    port: Port = 8080, host: Host = "127.0.0.1", rules: RulesOpt = None,
    data_dir: Annotated[Path, typer.Option(help="Where the SQLite files live.")] = Path("var"),
    legacy_latency_ms: Annotated[int | None, typer.Option(
        help="Fixed legacy stub latency in ms, no jitter (default: the stub's own, "
        "250-350 ms like a monolith).")] = None,
    admin_port: AdminPort = None, admin_host: AdminHost = "127.0.0.1",
    log_format: LogFormatOpt = "text",
) -> None:
    """Run the whole strangler on this machine: proxy, checkout core, legacy stub.

    The proxy listens on PORT, the core on PORT+1, the legacy stub on PORT+2; state lives in
    SQLite files under --data-dir and the rules file is watched for changes.

    Example: strangler up --port 8080
    """
    # uvicorn drains, then re-raises the SIGTERM it caught: as SystemExit it unwinds through
    # _backend, which stops the core and the legacy stub instead of leaving them orphaned.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    if port > 65533:
        fail(f"--port {port}: the core and the legacy stub need --port + 1 and + 2", 2)
    _refuse_bad_settings()  # before the core and the legacy stub start
    rules_path = rules or default_rules()
    data_dir.mkdir(parents=True, exist_ok=True)
    _lock_data_dir(data_dir)
    _proxy_logging(log_format)  # before the banner: in json, a log line
    core_env = {"CHECKOUT_CORE_DB_PATH": str(data_dir / "checkout_core.sqlite3")}
    legacy_env = {}
    if legacy_latency_ms is not None:
        legacy_env["LEGACY_STUB_LATENCY_MS"] = str(legacy_latency_ms)
        legacy_env["LEGACY_STUB_LATENCY_JITTER_MS"] = "0"
    if "STRANGLER_OTEL" in os.environ:  # tracing: the backends join the proxy's traces
        core_env["CHECKOUT_CORE_OTEL"] = os.environ.get("CHECKOUT_CORE_OTEL",
                                                        os.environ["STRANGLER_OTEL"])
        legacy_env["LEGACY_STUB_OTEL"] = os.environ.get("LEGACY_STUB_OTEL",
                                                        os.environ["STRANGLER_OTEL"])
    with _backend("checkout_core", port + 1, core_env, "checkout core",
                  log_format) as core_url, \
            _backend("legacy_stub", port + 2, legacy_env, "legacy stub",
                     log_format) as legacy_url:
        proxy_url = f"http://{host}:{port}"
        admin_url = f"http://{admin_host}:{admin_port}" if admin_port else proxy_url
        _say(
            log_format,
            f"checkout strangler\n  proxy        {proxy_url}\n  checkout core {core_url}\n"
            f"  legacy stub  {legacy_url}\n  rules        {rules_path} (watched)\n"
            f"  metrics      {admin_url}/metrics\n"
            f"  dashboard    {admin_url}/dashboard\n\ntry:\n"
            f"  curl -si -X POST {proxy_url}/carts -H 'Content-Type: application/json' "
            f"-H 'X-Checkout-Funnel: warranties' -H 'X-Country: IE' "
            f"-d '{{\"country\": \"IE\", \"currency\": \"EUR\"}}'\n"
        )
        _run_proxy(host, port, 1, {
            "STRANGLER_CORE_URL": core_url, "STRANGLER_LEGACY_URL": legacy_url,
            "STRANGLER_RULES_FILE": str(rules_path),
            "STRANGLER_DB_PATH": str(data_dir / "strangler.sqlite3"),
            # everything runs on this machine: a client on it may say its country
            # (X-Country, as in the quick start); set it yourself to trust otherwise
            "STRANGLER_TRUSTED_PROXIES": os.environ.get("STRANGLER_TRUSTED_PROXIES",
                                                        LOOPBACK),
        }, _admin(admin_host, admin_port), log_format)
