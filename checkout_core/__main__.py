"""`python -m checkout_core [--host H] [--port P]`: the core under uvicorn."""

from __future__ import annotations

import argparse

import uvicorn

import logformat
from checkout_core.config import CoreSettings
from checkout_core.main import create_app


def main(argv: list[str] | None = None) -> None:
    defaults = CoreSettings()
    parser = argparse.ArgumentParser(prog="python -m checkout_core", description=__doc__)
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument("--db-path", default=str(defaults.db_path))
    logformat.add_argument(parser)
    args = parser.parse_args(argv)
    logformat.configure(logformat.from_args(parser, args), level="INFO")
    settings = CoreSettings(host=args.host, port=args.port, db_path=args.db_path)
    # log_config=None: uvicorn's loggers keep the configuration above
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                log_config=None)


if __name__ == "__main__":
    main()
