"""Smoke test of the proxy's image, without a container runtime (scripts/build-image.sh).

    python3 scripts/image_smoke.py --image REF [--buildah "buildah --root ..."] [--rules FILE]

The image's root file system (a buildah working container, mounted) is run the way a
container runtime would run it, as far as the proxy can tell: each process in a private
mount namespace, chrooted into the root file system mounted read-only, with the image's
environment, working directory and user (uid 65532), a writable volume at
/var/lib/strangler and the rules file mounted read-only at /etc/strangler/rules (as the
Helm chart's ConfigMap is). It shares the host's network, so every port is a free
loopback port. Checks, each printed as it passes:

1. the legacy stub and the checkout core start from the image (`python -m ...`);
2. the entry point (`strangler serve`) starts as uid 65532 on the read-only root and
   answers; /_strangler/healthz on the admin port wants the token, and is 200 with it;
3. a customer in a 50% pilot country reaches the core, another one legacy;
4. `strangler kill` run from the image (as `kubectl exec` would) sends the first one to
   legacy (KILL_SWITCH) within seconds; /metrics shows the switch;
5. the image's HEALTHCHECK command exits 0;
6. nothing was written outside the volume, and importing every module of the project with
   a writable root writes no .pyc (nor anything else);
7. SIGTERM drains the proxy: it exits (0, or uvicorn's re-raised SIGTERM) within 20 s.
Exits 1 at the first failed check, with the processes' logs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

UID = 65532
TOKEN = "smoke-admin-token"
PILOT = {"X-Checkout-Funnel": "warranties", "X-Country": "IE",
         "Content-Type": "application/json"}
CART = b'{"country": "IE", "currency": "EUR"}'

# Runs on the host inside `unshare --mount`: bind the root file system onto itself, mount
# the volume, the rules, /dev and /proc into it, make it read-only, then chroot into it as
# the image's user and exec the command in the image's working directory.
SANDBOX = r"""
root=$1 vol=$2 rules=$3 workdir=$4 user=$5 mode=$6; shift 6
mount --bind "$root" "$root"
mount --bind "$vol" "$root/var/lib/strangler"
mount --bind "$rules" "$root/etc/strangler/rules"
mount -o remount,bind,ro "$root/etc/strangler/rules"
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
[ "$mode" = rw ] || mount -o remount,bind,ro "$root"
exec chroot --userspec="$user" "$root" /usr/bin/env -C "$workdir" "$@"
"""


IMPORT_EVERYTHING = """
import importlib, pkgutil
count = 0
for top in ("proxy", "control", "guardrails", "admin", "checkout_core", "legacy_stub", "cli"):
    package = importlib.import_module(top)
    count += 1
    for info in pkgutil.walk_packages(package.__path__, top + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
            count += 1
print(count)
"""


class SmokeFailure(Exception):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(method: str, url: str, headers: dict[str, str] | None = None,
         body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, lower(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, lower(exc.headers.items()), exc.read()


def lower(items: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in items}


def answers(url: str) -> Callable[[], bool]:
    return lambda: http("GET", url)[0] == 200


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - start
        except OSError:
            pass
        if time.monotonic() - start > timeout:
            raise SmokeFailure(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def ok(message: str) -> None:
    print(f"  ok  {message}", flush=True)


class Image:
    """The image's root file system and configuration, through buildah."""

    def __init__(self, buildah: list[str], ref: str) -> None:
        self.buildah = buildah
        info = json.loads(self._run("inspect", "--type", "image", ref))
        docker = info.get("Docker", {}).get("config") or {}
        oci = info.get("OCIv1", {}).get("config") or {}
        self.config: dict[str, Any] = {**oci, **{k: v for k, v in docker.items() if v}}
        self.container = self._run("from", "--pull=false", "--quiet", ref).strip()
        self.rootfs = Path(self._run("mount", self.container).strip())

    def _run(self, *args: str) -> str:
        return subprocess.run([*self.buildah, *args], check=True, capture_output=True,
                              text=True).stdout

    @property
    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config.get("Env") or [])

    def remove(self) -> None:
        subprocess.run([*self.buildah, "rm", self.container], capture_output=True, check=False)


class Sandbox:
    """Processes run from the image's root file system (read-only) as its user."""

    def __init__(self, image: Image, volume: Path, rules: Path, logs: Path) -> None:
        self.image, self.volume, self.rules, self.logs = image, volume, rules, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def command(self, argv: list[str], env: dict[str, str], read_only: bool = True,
                user: str | None = None) -> list[str]:
        user = user or self.image.config.get("User") or "0:0"
        workdir = self.image.config.get("WorkingDir") or "/"
        prefix = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-ec",
                  SANDBOX, "sandbox", str(self.image.rootfs), str(self.volume),
                  str(self.rules), workdir, user, "ro" if read_only else "rw"]
        assignments = [f"{k}={v}" for k, v in {**self.image.env, **env}.items()]
        return [*prefix, "-i", *assignments, *argv]  # env -C DIR -i VAR=... CMD

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(self.command(argv, env), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs[name] = proc
        return proc

    def run(self, name: str, argv: list[str], env: dict[str, str], timeout: float = 60,
            read_only: bool = True, user: str | None = None,
            ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.command(argv, env, read_only, user), capture_output=True,
                              text=True, timeout=timeout, check=False)
        (self.logs / f"{name}.log").write_text(done.stdout + done.stderr)
        return done

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def dump_logs(self) -> None:
        for log in sorted(self.logs.glob("*.log")):
            print(f"--- {log.name} (last 40 lines)")
            print("\n".join(log.read_text(errors="replace").splitlines()[-40:]))


def snapshot(rootfs: Path) -> dict[str, float]:
    skip = {rootfs / "proc", rootfs / "dev", rootfs / "sys", rootfs / "var/lib/strangler"}
    files: dict[str, float] = {}
    for dirpath, dirnames, filenames in os.walk(rootfs):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in skip]
        for name in filenames:
            path = Path(dirpath, name)
            try:
                files[str(path.relative_to(rootfs))] = path.lstat().st_mtime
            except OSError:
                pass
    return files


def core_and_legacy_sessions(proxy: str) -> tuple[str, str]:
    core = legacy = None
    decision = ""
    for i in range(200):
        session = f"smoke-{i}"
        status, headers, _ = http("POST", proxy + "/carts",
                                  {**PILOT, "X-Checkout-Session": session}, CART)
        if status != 201:
            raise SmokeFailure(f"POST /carts answered {status} ({headers})")
        backend = headers.get("x-checkout-backend")
        decision = headers.get("x-checkout-decision", "")
        if backend == "core" and core is None:
            core = session
        elif backend == "legacy" and legacy is None:
            legacy = session
        if core and legacy:
            return core, legacy
    raise SmokeFailure("200 customers in a 50% pilot country, and not one on each backend "
                       f"(the last: {decision})")


def smoke(sandbox: Sandbox, image: Image) -> None:
    ports = {name: free_port() for name in ("core", "legacy", "proxy", "admin")}
    before = snapshot(image.rootfs)

    # With a writable root, and as root (who could write anywhere), importing every module
    # of the image with the image's environment writes nothing: no .pyc (they were compiled
    # at install time, and PYTHONDONTWRITEBYTECODE=1), no cache file.
    done = sandbox.run("imports", ["python3", "-c", IMPORT_EVERYTHING], {}, read_only=False,
                       user="0:0")
    if done.returncode != 0:
        raise SmokeFailure(f"importing the project's modules failed: {done.stderr[-2000:]}")
    written = sorted(p for p, mtime in snapshot(image.rootfs).items() if before.get(p) != mtime)
    if written:
        raise SmokeFailure(f"a writable root got files at run time: {written[:20]}")
    ok(f"{done.stdout.strip()} modules imported as root on a writable root: no .pyc or other "
       "file written")

    sandbox.start("legacy", ["python3", "-m", "legacy_stub", "--host", "127.0.0.1",
                             "--port", str(ports["legacy"])],
                  {"LEGACY_STUB_LATENCY_MS": "0", "LEGACY_STUB_LATENCY_JITTER_MS": "0",
                   "LEGACY_STUB_DECLINE_RATE": "0"})
    sandbox.start("core", ["python3", "-m", "checkout_core", "--host", "127.0.0.1",
                           "--port", str(ports["core"])], {})
    for name in ("legacy", "core"):
        took = wait_for(answers(f"http://127.0.0.1:{ports[name]}/healthz"), 60,
                        f"the {name} to answer")
        ok(f"{name} started from the image ({took:.1f}s)")

    entrypoint = list(image.config.get("Entrypoint") or [])
    if entrypoint != ["strangler", "serve"]:
        raise SmokeFailure(f"entry point is {entrypoint}, not strangler serve")
    proxy_env = {
        "STRANGLER_CORE_URL": f"http://127.0.0.1:{ports['core']}",
        "STRANGLER_LEGACY_URL": f"http://127.0.0.1:{ports['legacy']}",
        "STRANGLER_RULES_FILE": "/etc/strangler/rules/checkout.yaml",
        "STRANGLER_ADMIN_PORT": str(ports["admin"]),
        "STRANGLER_ADMIN_TOKEN": TOKEN,
        # the smoke test's requests come from loopback, as a load balancer's would come from
        # its own addresses: only a trusted peer's country header is believed
        "STRANGLER_TRUSTED_PROXIES": '["127.0.0.1/32"]',
    }
    proxy_proc = sandbox.start("proxy", [*entrypoint, "--host", "127.0.0.1", "--port",
                                         str(ports["proxy"]), "--admin-host", "127.0.0.1"],
                               proxy_env)
    proxy = f"http://127.0.0.1:{ports['proxy']}"
    admin = f"http://127.0.0.1:{ports['admin']}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    took = wait_for(lambda: http("GET", admin + "/_strangler/healthz", auth)[0] == 200, 60,
                    "the proxy's /_strangler/healthz")
    ok(f"strangler serve started from the image on a read-only root ({took:.1f}s)")
    uid_line = next(line for line in Path(f"/proc/{proxy_proc.pid}/status").read_text()
                    .splitlines() if line.startswith("Uid:"))
    if uid_line.split()[1:3] != [str(UID), str(UID)]:
        raise SmokeFailure(f"the proxy does not run as {UID}: {uid_line}")
    ok(f"it runs as uid {UID}")
    status = http("GET", admin + "/_strangler/healthz")[0]
    if status != 401:
        raise SmokeFailure(f"/_strangler/healthz without the token: {status}, not 401")
    if http("GET", proxy + "/metrics", auth)[0] != 404:
        raise SmokeFailure("/metrics is served on the main port despite the admin port")
    ok("admin surface on the admin port only, behind the token")

    core_session, legacy_session = core_and_legacy_sessions(proxy)
    ok(f"pilot customers on both backends ({core_session}: core, {legacy_session}: legacy)")

    done = sandbox.run("kill", ["strangler", "kill", "--funnel", "warranties", "--reason",
                                "image smoke test", "--actor", "smoke"], {})
    if done.returncode != 0:
        raise SmokeFailure(f"strangler kill exited {done.returncode}: {done.stderr}")
    start = time.monotonic()

    def killed() -> bool:
        _, headers, _ = http("POST", proxy + "/carts",
                             {**PILOT, "X-Checkout-Session": core_session}, CART)
        return (headers.get("x-checkout-backend") == "legacy"
                and headers.get("x-checkout-decision", "").startswith("KILL_SWITCH"))

    wait_for(killed, 10, "the kill switch to reach the proxy")
    ok(f"strangler kill from the image: the core customer is on legacy, KILL_SWITCH "
       f"({time.monotonic() - start:.2f}s after the CLI returned)")
    metrics = http("GET", admin + "/metrics", auth)[2].decode()
    if 'strangler_kill_switch{scope="warranties"} 1.0' not in metrics:
        raise SmokeFailure("/metrics does not show strangler_kill_switch{scope=warranties} 1")
    ok("/metrics: strangler_kill_switch{scope=\"warranties\"} 1.0")

    check = list((image.config.get("Healthcheck") or {}).get("Test") or [])
    if not check or check[0] != "CMD":
        raise SmokeFailure(f"no exec-form HEALTHCHECK in the image config: {check}")
    done = sandbox.run("healthcheck", check[1:], proxy_env, timeout=30)
    if done.returncode != 0:
        raise SmokeFailure(f"HEALTHCHECK {check[1:]} exited {done.returncode}: {done.stderr}")
    ok(f"HEALTHCHECK {shlex.join(check[1:])} exits 0")

    start = time.monotonic()
    os.killpg(proxy_proc.pid, signal.SIGTERM)
    try:
        code = proxy_proc.wait(20)
    except subprocess.TimeoutExpired as exc:
        raise SmokeFailure("the proxy did not exit within 20 s of SIGTERM") from exc
    # uvicorn re-raises the signal it caught once it has drained: -SIGTERM is a clean exit
    log = (sandbox.logs / "proxy.log").read_text(errors="replace")
    if code not in (0, -signal.SIGTERM) or "Finished server process" not in log:
        raise SmokeFailure(f"the proxy exited {code} after SIGTERM, without draining")
    ok(f"SIGTERM: the proxy drained and exited ({code}) in {time.monotonic() - start:.1f}s")

    sandbox.stop_all()
    after = snapshot(image.rootfs)
    changed = sorted(p for p, mtime in after.items() if before.get(p) != mtime)
    pyc = [p for p in changed if p.endswith(".pyc")]
    if changed:
        raise SmokeFailure(f"files written outside the volume: {changed[:20]} (.pyc: {len(pyc)})")
    state = sorted(p.name for p in sandbox.volume.iterdir())
    ok(f"nothing written outside /var/lib/strangler (it holds: {', '.join(state)})")
    proxy_log = (sandbox.logs / "proxy.log").read_text(errors="replace")
    if "Read-only file system" in proxy_log:
        raise SmokeFailure("the proxy tried to write to the read-only root (see its log)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--buildah", default="buildah --storage-driver vfs",
                        help="the buildah command, with its storage options")
    parser.add_argument("--rules", type=Path,
                        default=Path(__file__).resolve().parent.parent / "rules/checkout.yaml")
    parser.add_argument("--keep", action="store_true", help="keep the logs and the volume")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("image_smoke: needs root (mount namespaces, chroot)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="strangler-smoke-"))
    volume, rules, logs = work / "volume", work / "rules", work / "logs"
    for path in (volume, rules, logs):
        path.mkdir()
    os.chown(volume, UID, UID)
    volume.chmod(0o750)
    shutil.copy(args.rules, rules / "checkout.yaml")
    rules.chmod(0o755)
    (rules / "checkout.yaml").chmod(0o644)

    image = Image(shlex.split(args.buildah), args.image)
    sandbox = Sandbox(image, volume, rules, logs)
    print(f"image {args.image}: user {image.config.get('User')}, entry point "
          f"{image.config.get('Entrypoint')} {image.config.get('Cmd')}; work dir {work}")
    try:
        smoke(sandbox, image)
    except (SmokeFailure, subprocess.SubprocessError, OSError) as exc:
        print(f"FAILED: {exc}", flush=True)
        sandbox.stop_all()
        sandbox.dump_logs()
        return 1
    finally:
        sandbox.stop_all()
        image.remove()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("image smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
