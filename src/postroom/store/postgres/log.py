"""The email log on PostgreSQL: the log query, provider callbacks, mailer health."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from postroom.store import outbox, totals
from postroom.store.logsearch import LogDialect, nth_newest, search
from postroom.store.models import (
    AttemptCount,
    AttemptTotals,
    LogQuery,
    MailerHealth,
    ProviderEventRecord,
    StoredMessage,
)
from postroom.store.postgres.connection import Conn
from postroom.store.postgres.queue import select_messages
from postroom.store.rows import attempt_count_of, attempt_counts_sql, rollup_params

__all__ = [
    "attempt_counts",
    "attempt_totals",
    "events_of",
    "mailer_health",
    "newest_before",
    "query",
    "record_event_job",
]


_DOMAIN = "split_part({0}, '@', 2)"
# The index expressions are schema.sql's recipients_address and recipients_domain.
DIALECT = LogDialect(
    mark="%s",
    true="true",
    held="m.held",
    contains=lambda c: f"strpos(lower({c}), %s) > 0",
    lower=lambda c: f'lower({c}) COLLATE "C"',
    address_key='lower(r.address) COLLATE "C"',
    domain_key=f'lower({_DOMAIN.format("r.address")}) COLLATE "C"',
    domain=_DOMAIN.format,
)


def query(q: LogQuery, conn: Conn) -> list[StoredMessage]:
    def select(where: str, params: Sequence[Any], limit: int) -> list[StoredMessage]:
        return select_messages(conn, where, params, limit=limit, newest_first=True)

    return search(q, DIALECT, select, conn)


def newest_before(cursor: str | None, count: int, conn: Conn) -> str | None:
    return nth_newest(conn, DIALECT, cursor, count)


# -- provider callbacks ---------------------------------------------------------------------
_EVENT_FIELDS = (
    "mailer", "provider_id", "recipient", "status", "kind", "at", "detail", "received_at",
    "message_id",
)  # fmt: skip
_EVENT_COLUMNS = ", ".join(_EVENT_FIELDS)
_MATCH = (
    "SELECT id, message_id FROM attempts"
    " WHERE provider_id IN (%(id)s, '<' || %(id)s || '>') AND mailer = %(mailer)s"
    " ORDER BY lower(recipient) = lower(%(rcpt)s) DESC, at DESC, id DESC LIMIT 1"
)
_INSERT_EVENT = (
    f"INSERT INTO provider_events ({_EVENT_COLUMNS}, attempt_id)"
    f" VALUES ({', '.join('%s' for _ in range(len(_EVENT_FIELDS) + 1))})"
)


def record_event_job(event: ProviderEventRecord) -> Callable[[Conn], str | None]:
    """The event belongs to the message whose attempt through its mailer got its
    provider id, preferring the attempt of its recipient (see the sqlite engine)."""

    def record(conn: Conn) -> str | None:
        params = {"id": event.provider_id, "mailer": event.mailer, "rcpt": event.recipient}
        row = conn.execute(_MATCH, params).fetchone()
        attempt_id, message_id = row if row is not None else (None, None)
        values = [getattr(event, f) for f in _EVENT_FIELDS[:-1]] + [message_id, attempt_id]
        conn.execute(_INSERT_EVENT, values)
        mail_event = outbox.provider_event(event, message_id)
        if mail_event is not None:
            outbox.insert_events(outbox.POSTGRES, conn, [mail_event])
        return message_id

    return record


def events_of(message_id: str, conn: Conn) -> list[ProviderEventRecord]:
    sql = f"SELECT {_EVENT_COLUMNS} FROM provider_events WHERE message_id = %s ORDER BY at, id"
    return [
        ProviderEventRecord(**dict(zip(_EVENT_FIELDS, row, strict=True)))
        for row in conn.execute(sql, (message_id,))
    ]


# -- mailer health ----------------------------------------------------------------------------
def mailer_health(since: float, conn: Conn) -> list[MailerHealth]:
    return totals.mailer_health(conn, "%s", since)


_ATTEMPT_COUNTS = attempt_counts_sql("%s")


def attempt_counts(since: float, bucket: float, conn: Conn) -> list[AttemptCount]:
    rows = conn.execute(_ATTEMPT_COUNTS, rollup_params(since, bucket)).fetchall()
    return [attempt_count_of(row) for row in rows]


_COUNTS = totals.counts_sql("split_part(recipient, '@', 2)", "%s")
_REASONS = totals.reasons_sql("%s")


def attempt_totals(since: float, until: float, reasons: int, conn: Conn) -> AttemptTotals:
    counts = conn.execute(_COUNTS, (since, until)).fetchall()
    return totals.totals(counts, conn.execute(_REASONS, (since, until, reasons)).fetchall())
