"""The `strangler` command."""

from __future__ import annotations

import logging

import typer

from cli import (
    events,
    guard_cmd,
    inspect_cmd,
    ops,
    rollout_cmd,
    rules_cmd,
    run,
    shadow_cmd,
    store_cmd,
)
from cli.common import EXIT_CODES_HELP

app = typer.Typer(
    name="strangler",
    help="Move checkout traffic from legacy to the new core, funnel by funnel, safely.\n\n"
    + EXIT_CODES_HELP,
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(rules_cmd.app, name="rules")
app.command()(run.up)
app.command()(run.serve)
app.command()(ops.status)
app.command()(ops.ramp)
app.command()(ops.kill)
app.command()(ops.unkill)
app.command()(inspect_cmd.explain)
app.command()(inspect_cmd.audit)
app.add_typer(guard_cmd.app, name="guard")
app.add_typer(rollout_cmd.app, name="rollout")
app.add_typer(shadow_cmd.app, name="shadow")
app.add_typer(events.app, name="events")
app.add_typer(store_cmd.app, name="store")


@app.callback()
def main(verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Log what the command does (debug) on stderr.")) -> None:
    """Commands print what they did; the log is for --verbose only (the proxy logs for
    itself when `serve`/`up` run it)."""
    if verbose:
        logging.basicConfig(level=logging.DEBUG,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    else:
        logging.getLogger().addHandler(logging.NullHandler())
        logging.lastResort = None


if __name__ == "__main__":
    app()
