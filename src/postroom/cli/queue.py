"""``postroom queue``: what is waiting, or was recently handled, and in which state; and
the operator's actions on it (retry, hold, release, delete)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
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


@queue.command("retry")
@click.argument("message_id", metavar="ID", required=False)
@click.option("--all", "every", is_flag=True, help="Every message in the queue.")
@config_option
@pass_app
def retry(app: AppContext, message_id: str | None, every: bool) -> None:
    """Try a message's queued and deferred recipients now (or every message's)."""
    if every == (message_id is not None):
        raise click.UsageError("give either a message ID or --all")

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


_ACTIONS: dict[str, tuple[Callable[[Store, str], Awaitable[bool]], str, str]] = {
    "hold": (lambda store, i: store.hold(i), "held", "Keep a message from being tried."),
    "release": (
        lambda store, i: store.release_hold(i),
        "released",
        "Let a held message be tried again.",
    ),
    "delete": (
        lambda store, i: store.delete(i),
        "deleted",
        "Remove a message, its recipients and its log entries (no DSN is sent).",
    ),
}


def _action(name: str) -> click.Command:
    act, done, help_text = _ACTIONS[name]

    @click.argument("message_id", metavar="ID")
    @config_option
    @pass_app
    def command(app: AppContext, message_id: str) -> None:
        if not app.run(lambda store: act(store, message_id)):
            fail(f"no message with id {message_id!r}")
        click.echo(f"message {message_id} {done}")

    return queue.command(name, help=help_text)(command)


hold, release, delete = (_action(name) for name in _ACTIONS)
