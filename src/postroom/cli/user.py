"""``postroom user``: the users who may log in (SMTP AUTH) and send mail."""

from __future__ import annotations

import asyncio
import sys

import click

from postroom.cli import AppContext, config_option, fail, pass_app
from postroom.cli.mailbox import account_key, describe_quota, mailboxes_of, quota_of
from postroom.cli.render import emit_json, format_time, iso_time, print_table
from postroom.cli.senders import check_senders, sender_options
from postroom.config.settings import parse_size
from postroom.directory import Users, new_user_key, user_key
from postroom.intake.principals import user_rights
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


def _size(text: str | None) -> int | None:
    """A quota given on the command line: octets, or "default" (None)."""
    if text is None or text.lower() == "default":
        return None
    try:
        return parse_size(text)
    except ValueError as exc:
        fail(str(exc), 2)


@user.command("add")
@click.argument("address")
@password_stdin_option
@sender_options("its own address's domain")
@click.option(
    "--quota",
    metavar="SIZE",
    help="Octets the user's mailbox may hold: 1G, 500M, a number; 0: no limit"
    " (default: mailboxes.default_quota).",
)
@config_option
@pass_app
def add(
    app: AppContext,
    address: str,
    *,
    password_stdin: bool,
    sender_domains: tuple[str, ...],
    any_sender: bool,
    quota: str | None,
) -> None:
    """Add a user with a password. It may send as its own address's domain, and as
    each --sender-domain; --any-sender: as any domain."""
    new_user_key(address)  # refuse a bad address or domain before asking for a password
    check_senders(sender_domains, any_sender)
    limit = _size(quota)
    password = read_password(password_stdin)
    record = app.run(
        lambda store: Users(store).add(address, password, sender_domains, any_sender=any_sender),
        create=True,
    )
    click.echo(f"user {record.address} added; may send as {user_rights(record).describe()}")
    if quota is not None:
        _set_quota(app, record.address, limit)


def _set_quota(app: AppContext, address: str, limit: int | None) -> None:
    account = mailboxes_of(app.settings).account(*account_key(address))
    asyncio.run(account.set_quota(limit))
    click.echo(f"mailbox of {address}: {describe_quota(quota_of(app.settings, address))}")


@user.command("quota")
@click.argument("address")
@click.argument("size", required=False)
@config_option
@pass_app
def quota(app: AppContext, address: str, size: str | None) -> None:
    """Show a user's mailbox quota and usage, or set it: SIZE is 1G, 500M or a number
    of octets, 0 for no limit, "default" for mailboxes.default_quota."""
    key = user_key(address)
    if app.run(lambda store: Users(store).get(key)) is None:
        fail(f"no user {key}")
    if size is None:
        click.echo(f"mailbox of {key}: {describe_quota(quota_of(app.settings, key))}")
        return
    _set_quota(app, key, _size(size))


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
    rows = ((r.address, user_rights(r).describe(), format_time(r.created_at)) for r in records)
    print_table(("Address", "May send as", "Created"), rows, empty="No users.")


@user.command("senders")
@click.argument("address")
@sender_options("its own address's domain")
@config_option
@pass_app
def senders(
    app: AppContext, address: str, sender_domains: tuple[str, ...], any_sender: bool
) -> None:
    """Set what a user may send as: its own domain and each --sender-domain (none: only
    its own), or --any-sender."""
    key = user_key(address)
    check_senders(sender_domains, any_sender)
    record = app.run(
        lambda store: Users(store).set_senders(key, sender_domains, any_sender=any_sender)
    )
    click.echo(f"user {key} may send as {user_rights(record).describe()}")


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
        "any_sender": record.any_sender,
        "may_send_as": user_rights(record).describe(),
        "created_at": iso_time(record.created_at),
    }
