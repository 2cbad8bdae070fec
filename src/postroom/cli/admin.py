"""``postroom admin``: the dashboard's administrators (not mail users). The dashboard is
served only while at least one exists."""

from __future__ import annotations

import click

from postroom.cli import AppContext, config_option, pass_app
from postroom.cli.render import emit_json, format_time, iso_time, print_table
from postroom.cli.user import password_stdin_option, read_password
from postroom.directory import Admins
from postroom.directory.admins import check_admin_name

__all__ = ["admin"]


@click.group()
def admin() -> None:
    """Administrators who may log in to the dashboard."""


@admin.command("add")
@click.argument("name")
@password_stdin_option
@config_option
@pass_app
def add(app: AppContext, name: str, password_stdin: bool) -> None:
    """Add an administrator with a password."""
    check_admin_name(name)  # before asking for a password
    password = read_password(password_stdin)
    app.run(lambda store: Admins(store).add(name, password), create=True)
    click.echo(f"admin {name} added; the dashboard is on at the API's address, /dashboard/")


@admin.command("passwd")
@click.argument("name")
@password_stdin_option
@config_option
@pass_app
def passwd(app: AppContext, name: str, password_stdin: bool) -> None:
    """Set an administrator's password (its open sessions end)."""
    password = read_password(password_stdin)
    app.run(lambda store: Admins(store).passwd(name, password))
    click.echo(f"password of admin {name} changed")


@admin.command("remove")
@click.argument("name")
@config_option
@pass_app
def remove(app: AppContext, name: str) -> None:
    """Remove an administrator."""
    app.run(lambda store: Admins(store).remove(name))
    click.echo(f"admin {name} removed")


@admin.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@config_option
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """List the administrators."""
    records = app.run(lambda store: Admins(store).list())
    if as_json:
        emit_json([{"name": r.name, "created_at": iso_time(r.created_at)} for r in records])
        return
    rows = ((r.name, format_time(r.created_at)) for r in records)
    print_table(("Name", "Created"), rows, empty="No admins: the dashboard is off.")
