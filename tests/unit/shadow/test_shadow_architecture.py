"""The shadow's pure parts import no server, client, store or Redis (docs/design.md)."""

from __future__ import annotations

import pytest

from tests.unit.test_architecture import IMPURE, hits, imported_by

PURE = ("shadow.routes", "shadow.spec", "shadow.selection", "shadow.compare", "shadow.idmap",
        "shadow.report", "control.rules")


@pytest.mark.parametrize("module", PURE)
def test_pure_shadow_parts_import_no_server_client_store_or_redis(module: str) -> None:
    assert hits(imported_by(module), IMPURE) == []


def test_the_mirror_needs_no_proxy_and_no_redis() -> None:
    assert hits(imported_by("shadow.mirror"), (*IMPURE, "proxy")) == []
