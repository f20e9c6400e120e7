"""`python -m checkout_core.worker`: the outbox relay and the order sync consumer, no web app.

Configured like the app (`CHECKOUT_CORE_*`); stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from checkout_core.bootstrap import running
from checkout_core.config import CoreSettings


async def run_worker(settings: CoreSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running(settings):
        await stop.wait()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(run_worker(CoreSettings()))


if __name__ == "__main__":
    main()
