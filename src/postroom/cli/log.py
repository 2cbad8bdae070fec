"""``postroom log``: every message, newest first, and one message's timeline."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import click
from rich.text import Text

from postroom.cli import AppContext, config_option, fail, pass_app
from postroom.cli.queue import message_json
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
from postroom.store.models import Attempt, LogQuery, RecipientStatus, StoredMessage

if TYPE_CHECKING:
    from postroom.store import Store

__all__ = ["log"]

STATUSES: Final = (*(s.value for s in RecipientStatus), "held")

_UNITS: Final[Mapping[str, float]] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)


class Since(click.ParamType[float]):
    """A point in time: ISO 8601 (``2027-01-15``, ``2027-01-15T08:00``; UTC unless a zone
    is given) or an age (``90m``, ``2h``, ``3d``, ``1w``) counted back from now."""

    name = "TIME"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        text = str(value).strip()
        if match := _RELATIVE.fullmatch(text):
            return time.time() - float(match[1]) * _UNITS[match[2].lower()]
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{text!r} is neither an ISO date/time nor an age like 2h or 3d", param, ctx)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()


@click.group(invoke_without_command=True)
@click.option("--status", type=click.Choice(STATUSES), help="Messages with a recipient in it.")
@click.option(
    "--to",
    "recipient",
    metavar="ADDRESS",
    help="A recipient address, or its domain, starts with ADDRESS.",
)
@click.option("--from", "sender", metavar="ADDRESS", help="The sender contains ADDRESS.")
@click.option("--since", type=Since(), help="Received at or after: ISO date/time or 2h, 3d.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="At most N."
)
@click.option("--cursor", metavar="ID", help="Continue after this id (the last one shown).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@config_option
@pass_app
def log(
    app: AppContext,
    *,
    status: str | None,
    recipient: str | None,
    sender: str | None,
    since: float | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """The email log: messages newest first with each recipient's status and last
    reply. `postroom log show ID` gives one message's timeline."""
    if click.get_current_context().invoked_subcommand is not None:
        return
    query = LogQuery(status, recipient, sender, since, limit, cursor)
    messages = app.run(lambda store: store.query(query))
    if as_json:
        emit_json([message_json(m) for m in messages])
        return
    columns = ("ID", "Received", "Sender", "Recipients", "Last reply")
    rows = (
        (
            m.id,
            format_time(m.received_at),
            m.sender or "<>",
            _recipients_cell(m),
            _lines(r.last_reply or "-" for r in m.recipients),
        )
        for m in messages
    )
    print_table(columns, rows, empty="No messages.")


@log.command("show")
@click.argument("message_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@config_option
@pass_app
def show(app: AppContext, message_id: str, as_json: bool) -> None:
    """One message's timeline: received, then every attempt; and each recipient's status."""
    message, attempts = app.run(lambda store: _timeline(store, message_id))
    if message is None:
        fail(f"no message with id {message_id!r}")
    if as_json:
        emit_json({**message_json(message), "timeline": _timeline_json(message, attempts)})
        return
    print_fields(_fields(message))
    click.echo()
    columns = ("Time", "Event", "Recipient", "Mailer", "Remote", "TLS", "Reply", "Duration")
    rows = [_received_row(message), *(_attempt_row(a) for a in attempts)]
    print_table(columns, rows, empty="")
    click.echo()
    now = ("Recipient", "Status", "Attempts", "Next attempt", "Last reply")
    current = (
        (
            r.address,
            _status(message, r.status),
            str(r.attempts),
            format_time(r.next_attempt_at) if r.next_attempt_at is not None else None,
            r.last_reply,
        )
        for r in message.recipients
    )
    print_table(now, current, empty="No recipients.")


async def _timeline(store: Store, message_id: str) -> tuple[StoredMessage | None, list[Attempt]]:
    return await store.message(message_id), await store.attempts(message_id)


def _fields(m: StoredMessage) -> list[tuple[str, Cell]]:
    client = m.client_ip and (f"{m.client_ip} ({m.helo})" if m.helo else m.client_ip)
    return [
        ("ID", m.id),
        ("Received", format_time(m.received_at)),
        ("Sender", m.sender or "<>"),
        ("Size", format_size(m.size)),
        ("Source", m.source_kind),
        ("Client", client or m.helo),
        ("User or key", m.principal),
        ("Held", "yes" if m.held else "no"),
        ("Body", "removed by retention (retention.bodies_days)" if m.body_removed else "kept"),
        *([("DSN about", m.dsn_of)] if m.dsn_of else []),
    ]


def _received_row(m: StoredMessage) -> tuple[Cell, ...]:
    via = f"via {m.protocol or m.source_kind}"
    return (format_time(m.received_at), "received", None, None, m.client_ip, m.tls, via, None)


def _attempt_row(a: Attempt) -> tuple[Cell, ...]:
    return (
        format_time(a.at),
        status_text(a.disposition),
        a.recipient,
        a.mailer,
        _remote(a),
        a.tls,
        _reply(a),
        f"{a.duration:.1f} s",
    )


def _remote(a: Attempt) -> str | None:
    where = a.host or ""
    if a.ip:
        where += f" [{a.ip}]" if where else a.ip
    if a.port is not None and where:
        where += f":{a.port}"
    return where or None


def _reply(a: Attempt) -> str:
    words = [str(a.code) if a.code is not None else "", a.enhanced or "", a.text]
    return " ".join(w for w in words if w)


def _timeline_json(m: StoredMessage, attempts: Iterable[Attempt]) -> list[dict[str, object]]:
    received: dict[str, object] = {
        "event": "received",
        "at": iso_time(m.received_at),
        "client_ip": m.client_ip,
        "protocol": m.protocol,
        "tls": m.tls,
    }
    return [received, *(_attempt_json(a) for a in attempts)]


def _attempt_json(a: Attempt) -> dict[str, object]:
    return {
        "event": "attempt",
        "at": iso_time(a.at),
        "recipient": a.recipient,
        "mailer": a.mailer,
        "host": a.host,
        "ip": a.ip,
        "port": a.port,
        "tls": a.tls,
        "reply": {"code": a.code, "enhanced": a.enhanced, "text": a.text},
        "provider_id": a.provider_id,
        "duration": a.duration,
        "disposition": a.disposition,
        "route": a.route,
        "route_reason": a.route_reason,
    }


def _status(m: StoredMessage, status: RecipientStatus) -> Text:
    text = status_text(status)
    if m.held and not status.is_final:
        text.append(" (held)", style="magenta")
    return text


def _recipients_cell(m: StoredMessage) -> Text:
    text = Text()
    for index, r in enumerate(m.recipients):
        if index:
            text.append("\n")
        text.append(f"{printable(r.address)} ")
        text.append_text(_status(m, r.status))
    return text


def _lines(values: Iterable[str]) -> Text:
    return Text("\n".join(printable(v) for v in values))
