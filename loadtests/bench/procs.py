"""Child processes and the machine they share: starting and stopping every process of a run
(each in its own session), readiness probes, nginx, and CPU accounting from Linux /proc."""

from __future__ import annotations

import contextlib
import http.client
import os
import platform
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.bench.common import REPO, HarnessError, log

# --------------------------------------------------------------------------------------------
# Process management
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Processes:
    """Every child runs in its own session; stopping kills its whole process group."""

    def __init__(self, workdir: Path, pin: tuple[set[int], set[int]] | None = None) -> None:
        self.workdir = workdir
        self.children: list[Child] = []
        self.pin = pin  # (CPUs of the proxies under test, CPUs of everything else)

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None,
              cwd: Path | None = None, proxy: bool = False) -> Child:
        log_path = self.workdir / f"{name}.log"
        cpus = None if self.pin is None else self.pin[0 if proxy else 1]
        own = os.sched_getaffinity(0) if cpus else None
        if cpus:  # a child inherits its parent's CPU affinity (and passes it to its workers)
            os.sched_setaffinity(0, cpus)
        try:
            with open(log_path, "wb") as out:
                proc = subprocess.Popen(
                    cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env={**os.environ, **(env or {})}, cwd=str(cwd or REPO),
                    start_new_session=True,
                )
        finally:
            if own:
                os.sched_setaffinity(0, own)
        child = Child(name, proc, log_path)
        self.children.append(child)
        return child

    @staticmethod
    def _signal(child: Child, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.proc.pid, sig)  # the child's own group (start_new_session)

    def stop(self, child: Child, grace: float = 10.0) -> None:
        if child.proc.poll() is None:
            self._signal(child, signal.SIGTERM)
            try:
                child.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal(child, signal.SIGKILL)
                child.proc.wait(5)
        else:  # the leader is gone; make sure nothing it started lingers
            self._signal(child, signal.SIGKILL)
        with contextlib.suppress(ValueError):
            self.children.remove(child)

    def stop_all(self) -> None:
        for child in list(self.children):
            if child.proc.poll() is None:
                self._signal(child, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for child in list(self.children):
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            self._signal(child, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(5)
        self.children.clear()


def http_get(port: int, path: str, headers: dict[str, str] | None = None,
             timeout: float = 2.0) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def wait_ready(child: Child, port: int, path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if child.proc.poll() is not None:
            raise HarnessError(f"{child.name} exited with code {child.proc.returncode}:\n"
                               f"{child.log_tail()}")
        try:
            status, _, _ = http_get(port, path, timeout=1.0)
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise HarnessError(f"{child.name} not ready on port {port} after {timeout:.0f} s:\n"
                               f"{child.log_tail()}")
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# nginx (upstream and reverse-proxy target)
# --------------------------------------------------------------------------------------------

def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def nginx_conf(workdir: Path, name: str, server_block: str, extra_http: str = "") -> Path:
    temp = workdir / f"{name}-temp"
    temp.mkdir(exist_ok=True)
    conf = workdir / f"{name}.conf"
    conf.write_text(f"""
worker_processes 1;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    server_tokens off;
    {extra_http}
    server {{
        {server_block}
    }}
}}
""")
    return conf


def start_nginx(procs: Processes, name: str, conf: Path, proxy: bool = False) -> Child:
    binary = nginx_binary()
    assert binary is not None
    return procs.start(name, [binary, "-e", str(procs.workdir / f"{name}-error.log"),
                              "-p", str(procs.workdir), "-c", str(conf), "-g", "daemon off;"],
                       proxy=proxy)


# --------------------------------------------------------------------------------------------
# CPU accounting (Linux /proc): CPU seconds of a process and its descendants
# --------------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> tuple[int, float] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK  # ppid, utime+stime


def cpu_seconds(root: int) -> float | None:
    if not Path("/proc/self/stat").exists():
        return None
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                parents[int(entry.name)], cpu[int(entry.name)] = stat
    if root not in cpu:
        return None
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return sum(cpu.get(pid, 0.0) for pid in tree)


def system_busy() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, wall clock) for a busy-cores figure."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(f) for f in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / _TICK, time.monotonic()


# --------------------------------------------------------------------------------------------
# The machine: CPU pinning, what it is, how loaded it is
# --------------------------------------------------------------------------------------------

def cpu_split() -> tuple[set[int], set[int]] | None:
    """The last usable CPU for the proxy under test, the others for everything else."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return {cpus[-1]}, set(cpus[:-1])


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform()}


def loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def unwind_on_signals(name: str) -> None:
    """Ctrl-C raises KeyboardInterrupt even when started from a shell that ignores SIGINT in
    background jobs; SIGTERM and SIGHUP unwind the same way (SystemExit), so that the
    harness's `finally` stops every process it started."""

    def raise_exit(signum: int, _frame: Any) -> None:
        log(f"{name}: signal {signum}, stopping every process")
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, raise_exit)
    with contextlib.suppress(AttributeError):
        signal.signal(signal.SIGHUP, raise_exit)


def clean_up(procs: Processes, workdir: Path, keep_logs: bool, name: str) -> None:
    """Stop every process of a run and remove its work directory (or say where it is)."""
    procs.stop_all()
    if keep_logs:
        log(f"{name}: logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
