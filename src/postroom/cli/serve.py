"""``postroom serve``: run the server in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import sys

import click

from postroom.cli import AppContext, config_option, pass_app

__all__ = ["serve"]


@click.command()
@config_option
@pass_app
def serve(app: AppContext) -> None:
    """Run the mail server until SIGTERM or SIGINT."""
    settings = app.settings  # a bad file ends here, before anything starts
    from postroom.runtime import run

    sys.exit(run(settings))
