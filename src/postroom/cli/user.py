"""``postroom user``: the users who may log in (SMTP AUTH) and send mail."""

from __future__ import annotations

import sys

import click

from postroom.cli import AppContext, config_option, pass_app
from postroom.cli.render import emit_json, format_time, iso_time, print_table
from postroom.directory import Users, new_user_key, normalize_domain, user_key
from postroom.store.models import UserRecord

__all__ = ["user"]

password_stdin_option = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input instead of prompting.",
)


def read_password(from_stdin: bool) -> str:
    """One line of standard input (its line ending removed), or a hidden prompt, twice."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@click.group()
def user() -> None:
    """Users who may log in to send mail."""


@user.command("add")
@click.argument("address")
@password_stdin_option
@click.option(
    "--sender-domain",
    "sender_domains",
    multiple=True,
    metavar="DOMAIN",
    help="A domain the user may send as (repeatable; none: any domain).",
)
@config_option
@pass_app
def add(
    app: AppContext, address: str, password_stdin: bool, sender_domains: tuple[str, ...]
) -> None:
    """Add a user with a password."""
    new_user_key(address)  # refuse a bad address or domain before asking for a password
    for domain in sender_domains:
        normalize_domain(domain)
    password = read_password(password_stdin)
    record = app.run(lambda store: Users(store).add(address, password, sender_domains))
    click.echo(f"user {record.address} added")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@config_option
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """List the users."""
    records = app.run(lambda store: Users(store).list())
    if as_json:
        emit_json([_json(record) for record in records])
        return
    rows = (
        (r.address, ", ".join(r.sender_domains) or "any domain", format_time(r.created_at))
        for r in records
    )
    print_table(("Address", "May send as", "Created"), rows, empty="No users.")


@user.command("passwd")
@click.argument("address")
@password_stdin_option
@config_option
@pass_app
def passwd(app: AppContext, address: str, password_stdin: bool) -> None:
    """Set a user's password."""
    key = user_key(address)
    password = read_password(password_stdin)
    app.run(lambda store: Users(store).passwd(key, password))
    click.echo(f"password of {key} changed")


@user.command("remove")
@click.argument("address")
@config_option
@pass_app
def remove(app: AppContext, address: str) -> None:
    """Remove a user."""
    key = user_key(address)
    app.run(lambda store: Users(store).remove(key))
    click.echo(f"user {key} removed")


def _json(record: UserRecord) -> dict[str, object]:
    return {
        "address": record.address,
        "sender_domains": list(record.sender_domains),
        "created_at": iso_time(record.created_at),
    }
