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
