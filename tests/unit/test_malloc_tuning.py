"""glibc malloc tuning of the proxy process (proxy.runtime.tune_malloc)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from proxy.config import ProxySettings


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_tuning_is_accepted_by_glibc() -> None:
    # in a child: mallopt changes the whole process, the test runner included
    code = "from proxy.runtime import tune_malloc; print(tune_malloc())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "True"


def test_tuning_is_on_by_default_and_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ProxySettings().malloc_tuning is True
    monkeypatch.setenv("STRANGLER_MALLOC_TUNING", "false")
    assert ProxySettings().malloc_tuning is False
