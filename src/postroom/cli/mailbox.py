"""``postroom mailbox``: local users' mailboxes as POP3 serves them (read only)."""

from __future__ import annotations

import asyncio

import click

from postroom.cli import AppContext, config_option, fail, pass_app
from postroom.cli.render import emit_json, format_size, format_time, print_table
from postroom.config.settings import Settings
from postroom.directory import user_key
from postroom.errors import AddressError
from postroom.mailbox import Maildir, mailbox_key
from postroom.mailbox.base import Quota

__all__ = ["describe_quota", "mailbox", "mailboxes_of", "quota_of"]


def mailboxes_of(settings: Settings) -> Maildir:
    """The server's mailbox store, as the configuration names it."""
    return Maildir(settings.data_dir / "mail", default_quota=settings.mailboxes.default_quota)


def account_key(address: str) -> tuple[str, str]:
    """``(domain, user)`` of a user's mailbox; a one-line error for a bad address."""
    try:
        return mailbox_key(user_key(address))
    except (AddressError, ValueError) as exc:
        fail(f"{address!r} cannot name a mailbox: {exc}")


def quota_of(settings: Settings, address: str) -> Quota:
    return asyncio.run(mailboxes_of(settings).account(*account_key(address)).quota())


def describe_quota(quota: Quota) -> str:
    limit = format_size(quota.limit) if quota.limit else "no limit"
    whose = "" if quota.own or not quota.limit else " (the default)"
    return f"{format_size(quota.usage)} of {limit}{whose}"


@click.group()
def mailbox() -> None:
    """Local users' mailboxes."""


@mailbox.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@config_option
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """Every mailbox holding mail: messages in INBOX, unread, size and quota."""
    store = mailboxes_of(app.settings)

    async def gather() -> list[dict[str, object]]:
        found: list[dict[str, object]] = []
        for domain, user in await store.accounts():
            account = store.account(domain, user)
            status = await account.status("INBOX")
            quota = await account.quota()
            found.append(
                {
                    "address": f"{user}@{domain}",
                    "inbox": status.messages,
                    "unseen": status.unseen,
                    "usage": quota.usage,
                    "quota": quota.limit,
                }
            )
        return found

    rows = asyncio.run(gather())
    if as_json:
        emit_json(rows)
        return
    print_table(
        ("Address", "INBOX", "Unread", "Size", "Quota"),
        (
            (
                str(r["address"]),
                str(r["inbox"]),
                str(r["unseen"]),
                format_size(int(str(r["usage"]))),
                format_size(int(str(r["quota"]))) if r["quota"] else "-",
            )
            for r in rows
        ),
        empty="No mailboxes.",
    )


@mailbox.command("show")
@click.argument("address")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@config_option
@pass_app
def show(app: AppContext, address: str, as_json: bool) -> None:
    """One user's folders: messages, unread, size, UIDVALIDITY and UIDNEXT; the quota."""
    domain, user = account_key(address)
    store = mailboxes_of(app.settings)
    if not store.path(domain, user).is_dir():
        fail(f"no mailbox for {user}@{domain} (it is made by the first delivery or login)")
    account = store.account(domain, user)

    async def gather() -> tuple[list[dict[str, object]], Quota]:
        folders: list[dict[str, object]] = []
        for folder in await account.folders():
            status, messages = await account.messages(folder.name)
            folders.append(
                {
                    "name": folder.name,
                    "special_use": folder.special_use.value if folder.special_use else None,
                    "subscribed": folder.subscribed,
                    "messages": status.messages,
                    "unseen": status.unseen,
                    "size": status.size,
                    "uidvalidity": status.uidvalidity,
                    "uidnext": status.uidnext,
                    "latest": max((m.internal_date for m in messages), default=None),
                }
            )
        return folders, await account.quota()

    folders, quota = asyncio.run(gather())
    if as_json:
        emit_json(
            {
                "address": f"{user}@{domain}",
                "quota": {"limit": quota.limit, "usage": quota.usage, "own": quota.own},
                "folders": folders,
            }
        )
        return
    click.echo(f"{user}@{domain}: {describe_quota(quota)}")
    print_table(
        ("Folder", "Use", "Messages", "Unread", "Size", "Latest", "UIDVALIDITY", "UIDNEXT"),
        (
            (
                str(f["name"]),
                str(f["special_use"] or ""),
                str(f["messages"]),
                str(f["unseen"]),
                format_size(int(str(f["size"]))),
                format_time(f["latest"] if isinstance(f["latest"], float) else None),
                str(f["uidvalidity"]),
                str(f["uidnext"]),
            )
            for f in folders
        ),
        empty="No folders.",
    )
