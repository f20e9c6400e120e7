"""One CI policy: a test that lacks Redis or a browser skips on a laptop, fails under CI."""

from __future__ import annotations

import pytest

from tests.support.ci import skip_or_fail, under_ci


@pytest.mark.parametrize("value", ["1", "true", "yes", "TRUE", "Yes", " true "])
def test_under_ci_a_missing_dependency_fails(monkeypatch: pytest.MonkeyPatch,
                                             value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert under_ci()
    with pytest.raises(pytest.fail.Exception, match="required under CI.*no redis-server"):
        skip_or_fail("no redis-server binary")


@pytest.mark.parametrize("value", [None, "", "0", "false", "no"])
def test_elsewhere_a_missing_dependency_skips(monkeypatch: pytest.MonkeyPatch,
                                              value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert not under_ci()
    with pytest.raises(pytest.skip.Exception, match="no headless browser"):
        skip_or_fail("no headless browser")


def test_no_test_skips_for_a_missing_tool_on_its_own() -> None:
    # a bare pytest.skip / importorskip would skip under CI too, and report green for code
    # that never ran: every such skip goes through skip_or_fail
    from pathlib import Path

    tests = Path(__file__).resolve().parents[1]
    policy = tests / "support" / "ci.py"
    offenders = [
        f"{path.relative_to(tests)}:{number}"
        for path in sorted(tests.rglob("*.py")) if path != policy
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if ("pytest.skip(" in line or "importorskip(" in line) and "noqa: ci-policy" not in line
    ]
    assert offenders == [], "skip through tests/support/ci.py skip_or_fail instead"
