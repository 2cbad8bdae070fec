"""``postroom queue``: what is waiting, or was recently handled, and in which state; and
the operator's actions on it (retry, hold, release, delete)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import click
from rich.text import Text

from postroom.cli import AppContext, config_option, fail, pass_app
from postroom.cli.render import (
    Cell,
    emit_json,
    format_size,
    format_time,
    iso_time,
    print_fields,
    print_table,
    printable,
    status_text,
)
from postroom.net.wakeup import notify
from postroom.store.models import RecipientState, StoredMessage

if TYPE_CHECKING:
    from postroom.store import Store

__all__ = ["queue"]


@click.group()
def queue() -> None:
    """Messages in the queue."""


@queue.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="At most N."
)
@config_option
@pass_app
def list_(app: AppContext, as_json: bool, limit: int) -> None:
    """List messages, oldest first."""
    messages = app.run(lambda store: store.messages(limit=limit))
    if as_json:
        emit_json([message_json(message) for message in messages])
        return
    columns = ("ID", "Received", "Sender", "Recipients", "Size", "Client", "User or key")
    rows = (
        (
            m.id,
            format_time(m.received_at),
            m.sender or "<>",
            _recipients_cell(m.recipients),
            format_size(m.size),
            _client(m),
            m.principal,
        )
        for m in messages
    )
    print_table(columns, rows, empty="The queue is empty.")


@queue.command("show")
@click.argument("message_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@config_option
@pass_app
def show(app: AppContext, message_id: str, as_json: bool) -> None:
    """Show one message: envelope, DSN parameters, origin and each recipient's state."""
    message = app.run(lambda store: store.message(message_id))
    if message is None:
        fail(f"no message with id {message_id!r}")
    if as_json:
        emit_json(message_json(message))
        return
    print_fields(_fields(message))
    click.echo()
    columns = ("Recipient", "Status", "NOTIFY", "ORCPT", "Attempts", "Next attempt", "Last reply")
    rows = (
        (
            r.address,
            status_text(r.status),
            r.notify,
            r.orcpt,
            str(r.attempts),
            format_time(r.next_attempt_at) if r.next_attempt_at is not None else None,
            r.last_reply,
        )
        for r in message.recipients
    )
    print_table(columns, rows, empty="No recipients.")


def message_json(message: StoredMessage) -> dict[str, object]:
    return {
        "id": message.id,
        "received_at": iso_time(message.received_at),
        "size": message.size,
        "sender": message.sender,
        "dsn": {"ret": message.ret, "envid": message.envid},
        "body": message.body_type,
        "smtputf8": message.smtputf8,
        "source": {
            "kind": message.source_kind,
            "principal": message.principal,
            "client_ip": message.client_ip,
            "helo": message.helo,
            "protocol": message.protocol,
            "tls": message.tls,
        },
        "held": message.held,
        "body_removed": message.body_removed,
        "recipients": [_recipient_json(r) for r in message.recipients],
    }


def _recipient_json(recipient: RecipientState) -> dict[str, object]:
    return {
        "address": recipient.address,
        "status": recipient.status.value,
        "notify": recipient.notify,
        "orcpt": recipient.orcpt,
        "attempts": recipient.attempts,
        "next_attempt_at": iso_time(recipient.next_attempt_at),
        "last_reply": recipient.last_reply,
    }


def _fields(m: StoredMessage) -> list[tuple[str, Cell]]:
    body = m.body_type + (", SMTPUTF8" if m.smtputf8 else "")
    return [
        ("ID", m.id),
        ("Received", format_time(m.received_at)),
        ("Size", _exact_size(m.size)),
        ("Sender", m.sender or "<>"),
        ("Body", body),
        ("DSN RET", m.ret),
        ("DSN ENVID", m.envid),
        ("Source", m.source_kind),
        ("Client", _client(m)),
        ("Protocol", m.protocol),
        ("TLS", m.tls),
        ("User or key", m.principal),
        ("Held", "yes" if m.held else "no"),
    ]


def _exact_size(size: int) -> str:
    rounded = format_size(size)
    return rounded if rounded == f"{size} bytes" else f"{rounded} ({size} bytes)"


def _client(m: StoredMessage) -> str | None:
    if m.client_ip is None:
        return m.helo
    return f"{m.client_ip} ({m.helo})" if m.helo else m.client_ip


def _recipients_cell(recipients: tuple[RecipientState, ...]) -> Text:
    text = Text()
    for index, r in enumerate(recipients):
        if index:
            text.append("\n")
        text.append(f"{printable(r.address)} ")
        text.append_text(status_text(r.status))
    return text


# -- actions ---------------------------------------------------------------------------


def _id_or_all(every_help: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The arguments of an action on one message or, with --all, on every one it fits."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        every = click.option("--all", "every", is_flag=True, help=f"{every_help} (give no ID).")
        return click.argument("message_id", metavar="(ID | --all)", required=False)(every(command))

    return decorate


def _check_id_or_all(message_id: str | None, every: bool) -> None:
    if every == (message_id is not None):
        raise click.UsageError("give either a message ID or --all")


def _wake_server(app: AppContext, waiting: str | None = None) -> None:
    """Tell a running server the queue changed, so it acts now rather than at its next
    periodic check; ``waiting``: what waits (and is said to) when no server delivers."""
    settings = app.settings
    woke = notify(settings.data_dir)
    if waiting is None:
        return
    if settings.delivery.paused:
        click.echo(f"delivery is paused (delivery.paused): {waiting} once it is not")
    elif not woke:
        click.echo(f"no server is running for {settings.data_dir}: {waiting} once one starts")


@queue.command("retry")
@_id_or_all("Every message in the queue")
@config_option
@pass_app
def retry(app: AppContext, message_id: str | None, every: bool) -> None:
    """Try a message's queued and deferred recipients now, or with --all those of every
    message."""
    _check_id_or_all(message_id, every)

    async def make_due(store: Store) -> int | None:
        if message_id is not None and await store.message(message_id) is None:
            return None
        return await store.retry_now(message_id, time.time())

    count = app.run(make_due)
    if count is None:
        fail(f"no message with id {message_id!r}")
    what = "in the queue" if message_id is None else f"of {message_id}"
    noun = "recipient" if count == 1 else "recipients"
    click.echo(f"{count} {noun} {what} will be tried now")
    _wake_server(app, "they are tried" if count else None)


def _set_held(app: AppContext, message_id: str | None, held: bool) -> None:
    done = "held" if held else "released"
    if message_id is None:
        count = app.run(lambda store: store.hold_all(held))
        click.echo(f"{count} message{'' if count == 1 else 's'} {done}")
    else:
        found = app.run(
            lambda store: store.hold(message_id) if held else store.release_hold(message_id)
        )
        if not found:
            fail(f"no message with id {message_id!r}")
        click.echo(f"message {message_id} {done}")
    _wake_server(app, None if held else "released mail is tried")


@queue.command("hold")
@_id_or_all("Every message with a recipient waiting")
@config_option
@pass_app
def hold(app: AppContext, message_id: str | None, every: bool) -> None:
    """Keep a message from being tried until it is released. With --all, every message
    waiting now (as postsuper -h ALL); to deliver nothing at all, mail queued later
    too, set delivery.paused."""
    _check_id_or_all(message_id, every)
    _set_held(app, message_id, held=True)


@queue.command("release")
@_id_or_all("Every held message")
@config_option
@pass_app
def release(app: AppContext, message_id: str | None, every: bool) -> None:
    """Let a held message be tried again, or with --all every held message."""
    _check_id_or_all(message_id, every)
    _set_held(app, message_id, held=False)


@queue.command("delete")
@click.argument("message_id", metavar="ID")
@config_option
@pass_app
def delete(app: AppContext, message_id: str) -> None:
    """Remove a message, its recipients and its log entries (no DSN is sent)."""
    if not app.run(lambda store: store.delete(message_id)):
        fail(f"no message with id {message_id!r}")
    click.echo(f"message {message_id} deleted")
    _wake_server(app)
