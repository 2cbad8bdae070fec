"""``postroom db``: check the database file, and copy it while the server runs.

Both read the file on a connection of their own (never the schema set-up), so they work
beside a running server and on a damaged file.
"""

from __future__ import annotations

from pathlib import Path

import click

from postroom.cli import AppContext, config_option, fail, pass_app

__all__ = ["db"]


def _database(app: AppContext) -> Path:
    from postroom.errors import NoStore
    from postroom.store.instance import store_exists
    from postroom.store.open import sqlite_path

    url = app.settings.storage_url
    path = sqlite_path(url)
    if path is None:
        fail("only a SQLite store is a file to check or back up")
    if not store_exists(url):
        raise NoStore(str(path))
    return path


@click.group()
def db() -> None:
    """Check or back up the database."""


@db.command()
@config_option
@pass_app
def check(app: AppContext) -> None:
    """Check the whole database (PRAGMA integrity_check and the foreign keys): exit 0
    when sound, 1 with one line per problem when damaged."""
    from postroom.store.sqlite.check import integrity_problems

    path = _database(app)
    problems = integrity_problems(path, quick=False)
    for problem in problems:
        click.echo(f"{path}: {problem}")
    if problems:
        raise click.exceptions.Exit(1)
    click.echo(f"{path}: ok")


@db.command()
@click.argument("dest", type=click.Path(path_type=Path))
@config_option
@pass_app
def backup(app: AppContext, dest: Path) -> None:
    """Copy the database to DEST (a new file), consistent even while the server runs."""
    from postroom.store.sqlite.check import backup as copy

    size = copy(_database(app), dest)
    click.echo(f"{dest}: {size} bytes, checked")
