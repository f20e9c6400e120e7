"""`python -m checkout_core.worker [--log-format text|json]`: the outbox relay, the order
sync consumer and the shadow expiry, no web app.

Configured like the app (`CHECKOUT_CORE_*`); stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import logformat
from checkout_core.bootstrap import running
from checkout_core.config import CoreSettings


async def run_worker(settings: CoreSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running(settings):
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m checkout_core.worker",
                                     description=__doc__)
    logformat.add_argument(parser)
    args = parser.parse_args(argv)
    logformat.configure(logformat.from_args(parser, args), level="INFO")
    asyncio.run(run_worker(CoreSettings()))


if __name__ == "__main__":
    main()
