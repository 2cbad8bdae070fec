"""Provider callbacks (webhooks) recorded against the attempt that sent the message.

An attempt through a provider API keeps the provider's message id; a callback names the
same id (Mailgun without the angle brackets its send answer had) and a recipient.
The attempt of that recipient is preferred; any attempt with the id will do when the
provider spelled the recipient differently.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from postroom.store import outbox
from postroom.store.models import ProviderEventRecord

__all__ = ["events_of", "record_job"]

_FIELDS = (
    "mailer", "provider_id", "recipient", "status", "kind", "at", "detail", "received_at",
    "message_id",
)  # fmt: skip
_COLUMNS = ", ".join(_FIELDS)
_MATCH = (
    "SELECT id, message_id FROM attempts"
    " WHERE provider_id IN (:id, '<' || :id || '>') AND mailer = :mailer"
    " ORDER BY lower(recipient) = lower(:rcpt) DESC, at DESC, id DESC LIMIT 1"
)


def record_job(event: ProviderEventRecord) -> Callable[[sqlite3.Connection], str | None]:
    def record(conn: sqlite3.Connection) -> str | None:
        params = {"id": event.provider_id, "mailer": event.mailer, "rcpt": event.recipient}
        row = conn.execute(_MATCH, params).fetchone()
        attempt_id, message_id = row if row is not None else (None, None)
        values = [getattr(event, f) for f in _FIELDS[:-1]] + [message_id, attempt_id]
        conn.execute(
            f"INSERT INTO provider_events ({_COLUMNS}, attempt_id)"
            f" VALUES ({', '.join('?' for _ in values)})",
            values,
        )
        mail_event = outbox.provider_event(event, message_id)
        if mail_event is not None:
            outbox.insert_events(outbox.SQLITE, conn, [mail_event])
        return message_id

    return record


def events_of(message_id: str, conn: sqlite3.Connection) -> list[ProviderEventRecord]:
    sql = f"SELECT {_COLUMNS} FROM provider_events WHERE message_id = ? ORDER BY at, id"
    return [
        ProviderEventRecord(**dict(zip(_FIELDS, row, strict=True)))
        for row in conn.execute(sql, (message_id,))
    ]
