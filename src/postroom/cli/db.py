"""``postroom db``: the schema's version and its upgrades, checking and backing up an
SQLite file, and copying a store into PostgreSQL.

``check`` and ``backup`` read the file on a connection of their own (never the schema
set-up), so they work beside a running server and on a damaged file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from postroom.cli import AppContext, config_option, fail, pass_app
from postroom.errors import StoreError

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
    """The database: schema status and upgrades, check, back up, copy."""


@db.command()
@config_option
@pass_app
def status(app: AppContext) -> None:
    """Show the engine, the schema version found and the one this postroom understands,
    and what `db migrate` would do; exit 1 when they differ."""
    from postroom.store.migration import schema_state

    state = schema_state(app.settings.storage_url)
    click.echo(f"engine:   {state.engine}")
    click.echo(f"url:      {state.url}")
    found = "none (an empty database)" if state.found is None else str(state.found)
    click.echo(f"schema:   {found}")
    click.echo(f"postroom: {state.understood}")
    if state.current:
        click.echo("migrate:  nothing to do")
        return
    try:
        plan = state.plan()
    except StoreError as exc:
        click.echo(f"migrate:  refuses: {exc}")
    else:
        for step in plan:
            click.echo(f"migrate:  {step}")
    raise click.exceptions.Exit(1)


@db.command()
@config_option
@pass_app
def migrate(app: AppContext) -> None:
    """Create the schema, or apply its pending upgrades (one transaction, one line per
    step); a schema newer than this postroom is refused."""
    from postroom.store.migration import migrate_schema

    state, steps = migrate_schema(app.settings.storage_url)
    for step in steps:
        click.echo(f"{state.url}: {step}: done")
    if not steps:
        click.echo(f"{state.url}: schema version {state.understood}, nothing to do")


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


@db.command()
@click.option(
    "--to",
    "target",
    required=True,
    metavar="URL",
    help="The PostgreSQL database to copy into (postgresql://...): new and empty.",
)
@config_option
@pass_app
def copy(app: AppContext, target: str) -> None:
    """Copy the configured SQLite store into an empty PostgreSQL database, then compare
    the rows per table (exit 1 on a difference). Stop the server (or hold the queue)
    first: mail accepted during the copy stays behind in the SQLite store."""
    from rich.console import Console
    from rich.progress import Progress

    from postroom.store.copy import copy_store, table_counts
    from postroom.store.open import shown_url

    if not target.startswith(("postgresql://", "postgres://")):
        fail(f"--to {target!r}: db copy copies into PostgreSQL, a postgresql:// URL")
    source = _database(app)
    console = Console(stderr=True)
    with Progress(console=console, disable=not console.is_terminal) as bar:
        tasks: dict[str, Any] = {}

        def advance(table: str, done: int, total: int) -> None:
            if table not in tasks:
                tasks[table] = bar.add_task(table, total=total)
            bar.update(tasks[table], completed=done)

        copy_store(
            source,
            target,
            advance,
            inline_body_max=app.settings.database.inline_body_max,
        )
    counts = table_counts(source, target)
    width = max(len(count.table) for count in counts)
    for count in counts:
        verdict = "ok" if count.matches else "MISMATCH"
        click.echo(f"{count.table:<{width}}  {count.source:>9}  {count.target:>9}  {verdict}")
    if not all(count.matches for count in counts):
        fail(f"the copy in {shown_url(target)} does not have the rows of {source}")
    click.echo(f"{source} copied to {shown_url(target)}")
