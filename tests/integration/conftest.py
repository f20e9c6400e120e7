from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from proxy.config import ProxySettings
from proxy.main import UVICORN_OPTIONS, create_app
from tests.support.backends import EchoBackend
from tests.support.servers import ServerThread, free_port, serve

RULES = """\
schema: 1
funnels:
  - name: warranties
    match: {header: warranties, path_prefix: /warranties}
    salt: w1
    signals:
      order_placed: {method: POST, path: '^/checkouts/[^/]+/orders$', status: [201]}
      payment_declined: {method: POST, path: '^/checkouts/[^/]+/orders$', status: [402]}
    rules:
      - {id: ie-all, countries: [IE], percent: 100}
      - {id: de-none, countries: [DE], percent: 0}
      - {id: rest-half, countries: '*', percent: 50}
"""


# The tests play a CDN's customers: their X-Country comes from loopback, as a CDN's would
# (the proxy's own default believes it only from STRANGLER_TRUSTED_PROXIES).
TEST_DEFAULTS: dict[str, Any] = {"trust_country_headers": "always"}


class Stack:
    def __init__(self, core: ServerThread | None, legacy: ServerThread, proxy: ServerThread,
                 core_app: EchoBackend, legacy_app: EchoBackend, rules_file: Path,
                 settings: ProxySettings, app: Any) -> None:
        self.core, self.legacy, self.proxy = core, legacy, proxy
        self.core_app, self.legacy_app = core_app, legacy_app
        self.rules_file = rules_file
        self.settings = settings
        self.app = app

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def store(self) -> Any:
        return self.app.rt.store


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    with ExitStack() as stack:
        def build(core_up: bool = True, rules: str = RULES, redis_url: str | None = None,
                  core_url: str | None = None, **overrides: Any) -> Stack:
            core_app, legacy_app = EchoBackend("core"), EchoBackend("legacy")
            core = stack.enter_context(serve(core_app)) if core_up else None
            legacy = stack.enter_context(serve(legacy_app))
            rules_file = tmp_path / f"rules-{free_port()}.yaml"
            rules_file.write_text(rules)
            settings = ProxySettings(
                core_url=core_url or (core.url if core else f"http://127.0.0.1:{free_port()}"),
                legacy_url=legacy.url, rules_file=str(rules_file),
                db_path=str(tmp_path / "control.sqlite3"), redis_url=redis_url,
                poll_interval=0.1, **{"forward_path_prefixes": [], **TEST_DEFAULTS, **overrides},
            )
            app = create_app(settings)
            proxy = stack.enter_context(serve(app, **UVICORN_OPTIONS))
            return Stack(core, legacy, proxy, core_app, legacy_app, rules_file, settings, app)

        yield build
