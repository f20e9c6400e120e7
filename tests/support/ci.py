"""The CI policy for tests that need something a machine may lack (Redis, Chromium).

On a laptop such a test skips, saying what is missing. Under CI (`CI` set to 1, true or
yes, in any case) it fails instead: a CI run that silently skipped the Redis or browser
tests would report green for code it never ran.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

CI_VALUES = frozenset({"1", "true", "yes"})


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in CI_VALUES


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test for `reason`, or fail it when running under CI."""
    if under_ci():
        pytest.fail(f"required under CI (CI={os.environ.get('CI')}): {reason}")
    pytest.skip(reason)
