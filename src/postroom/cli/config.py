"""``postroom config``: which configuration is in force, and whether a file is sound.

``show`` reads only: it names the file (and what chose it), the data directory and
whether a store exists there, then prints the effective configuration. ``check`` reads a
file as the server does and fails with the server's one line and exit code 2.
"""

from __future__ import annotations

from pathlib import Path

import click

from postroom.cli import AppContext, config_option, pass_app

__all__ = ["config"]


@click.group()
def config() -> None:
    """Show or check the configuration."""


@config.command()
@config_option
@pass_app
def show(app: AppContext) -> None:
    """Print the configuration file in use (or "built-in defaults"), the data directory,
    and the effective configuration with every default, secrets masked."""
    _print_effective(app)


@config.command()
@click.argument("file", required=False, type=click.Path(path_type=Path))
@config_option
@pass_app
def check(app: AppContext, file: Path | None) -> None:
    """Check FILE (default: the configuration postroom would use) as the server does:
    print the effective configuration and exit 0, or print the problem in one line and
    exit 2."""
    if file is not None:
        app.config_path = file
    settings = app.settings
    if settings.tls.cert is not None:
        from postroom.net.tls import ensure_certificate, server_context

        # A configured certificate is only read (our own is made by the server).
        server_context(*ensure_certificate(settings), settings.tls.min_version)
    _print_effective(app)


def _print_effective(app: AppContext) -> None:
    from postroom.config.render import effective_toml
    from postroom.store.instance import store_exists
    from postroom.store.open import sqlite_path

    settings = app.settings
    url = settings.storage_url
    where = sqlite_path(url) or url
    state = "exists" if store_exists(url) else "none yet; `postroom serve` makes it"
    from postroom.config.discover import SEARCHED

    searched = f" (looked for {SEARCHED})" if app.source.path is None else ""
    click.echo(f"# configuration: {app.source.describe()}{searched}")
    click.echo(f"# data directory: {settings.data_dir}")
    click.echo(f"# store: {where} ({state})")
    click.echo(effective_toml(settings), nl=False)
