"""`python -m legacy_stub [--host H] [--port P]`: serve the stub with uvicorn."""

from __future__ import annotations

import argparse

import uvicorn

import logformat
from legacy_stub.app import create_app
from legacy_stub.config import LegacySettings


def main(argv: list[str] | None = None) -> None:
    defaults = LegacySettings()
    parser = argparse.ArgumentParser(prog="python -m legacy_stub", description=__doc__)
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port)
    logformat.add_argument(parser)
    args = parser.parse_args(argv)
    logformat.configure(logformat.from_args(parser, args), level="WARNING")
    settings = defaults.model_copy(update={"host": args.host, "port": args.port})
    # log_config=None: uvicorn's loggers keep the configuration above
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
