"""``postroom serve``: run the server in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import sys

import click

from postroom.cli import AppContext, config_option, pass_app

__all__ = ["serve"]


@click.command()
@config_option
@click.option(
    "--init",
    is_flag=True,
    help="Start although the data directory was used before with another database: make"
    " a new, empty store where it is missing or empty, or adopt the one configured.",
)
@click.option(
    "--migrate",
    is_flag=True,
    help="Upgrade an older PostgreSQL schema at start, as `postroom db migrate` does"
    " (an SQLite store is always upgraded at start).",
)
@pass_app
def serve(app: AppContext, init: bool, migrate: bool) -> None:
    """Run the mail server until SIGTERM or SIGINT.

    The first start in a new data directory creates the store; later starts refuse,
    with one line, a database that is missing, empty, damaged or not this directory's.
    A PostgreSQL schema older than this postroom is refused unless --migrate: with many
    nodes, upgrading is a step of its own (`postroom db migrate`)."""
    settings = app.settings  # a bad file ends here, before anything starts
    from postroom.runtime import run

    sys.exit(run(settings, app.source, init=init, migrate=migrate))
