"""The event outbox, webhook deliveries and the suppression list, once for every engine.

The SQL here is written once: SQLite and PostgreSQL both take ``INSERT ... ON CONFLICT``,
row values and ``RETURNING``; ``Dialect.sql`` turns the ``?`` placeholders into
psycopg's ``%s``, and PostgreSQL's claims add ``FOR UPDATE ... SKIP LOCKED`` (SQLite
has one writer at a time). Each function takes the engine's connection; the engines run
them as writer jobs or reads.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from postroom.mail.events import EventOrigin, EventType, MailEvent, new_event_id
from postroom.store.models import (
    AttemptCount,
    ProviderEventRecord,
    Suppression,
    SuppressionReason,
    WebhookAttempt,
    WebhookDelivery,
    WebhookState,
)

__all__ = [
    "EVENT_INSERT",
    "META_INSERT",
    "POSTGRES",
    "SQLITE",
    "Dialect",
    "add_suppression",
    "claim_deliveries",
    "event_params",
    "events_of",
    "fan_out",
    "has_due_deliveries",
    "has_new_events",
    "insert_events",
    "provider_event",
    "purge_events",
    "record_attempt",
    "remove_suppression",
    "suppressed",
    "suppressions",
    "webhook_backlog",
    "webhook_deliveries",
]

Conn = Any  # sqlite3.Connection or psycopg.Connection: both have execute() and cursor()


@dataclass(frozen=True, slots=True)
class Dialect:
    postgres: bool

    def sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.postgres else text

    def locking(self, table: str) -> str:
        """Rows claimed by one node are skipped by the others (PostgreSQL)."""
        return f" FOR UPDATE OF {table} SKIP LOCKED" if self.postgres else ""


SQLITE = Dialect(postgres=False)
POSTGRES = Dialect(postgres=True)

# -- events ---------------------------------------------------------------------------------
EVENT_INSERT = (
    "INSERT INTO events (id, type, at, queue_id, recipient, mailer, reply, reason, origin,"
    " details, fanned) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) ON CONFLICT (id) DO NOTHING"
)
# An event with its message's sender, Message-ID, tags and metadata (when still stored).
_EVENT_COLUMNS = (
    "e.seq, e.id, e.type, e.at, e.queue_id, e.recipient, e.mailer, e.reply, e.reason,"
    " e.origin, e.details, mm.message_id, m.sender, mm.tags, mm.metadata"
)
_EVENT_JOINS = (
    "LEFT JOIN messages m ON m.id = e.queue_id LEFT JOIN message_meta mm ON mm.id = e.queue_id"
)
_EVENT_FROM = f"events e {_EVENT_JOINS}"
_DELIVERY_FROM = f"webhook_deliveries d JOIN events e ON e.seq = d.seq {_EVENT_JOINS}"


def event_params(event: MailEvent) -> tuple[Any, ...]:
    return (
        event.id,
        event.type.value,
        event.at,
        event.queue_id,
        event.recipient,
        event.mailer,
        event.reply,
        event.reason,
        event.origin.value,
        json.dumps(dict(event.details)),
    )


def _event(row: Sequence[Any]) -> MailEvent:
    """A row of _EVENT_COLUMNS without its seq."""
    (id_, type_, at, queue_id, recipient, mailer, reply, reason, origin, details) = row[:10]
    message_id, sender, tags, metadata = row[10:]
    return MailEvent(
        id=id_,
        type=EventType(type_),
        at=at,
        recipient=recipient,
        queue_id=queue_id,
        mailer=mailer,
        reply=reply,
        reason=reason,
        origin=EventOrigin(origin),
        details=tuple(json.loads(details).items()),
        message_id=message_id,
        sender=sender,
        tags=tuple(json.loads(tags)) if tags else (),
        metadata=tuple(json.loads(metadata).items()) if metadata else (),
    )


META_INSERT = (
    "INSERT INTO message_meta (id, message_id, subject, tags, metadata) VALUES (?, ?, ?, ?, ?)"
)


def insert_events(d: Dialect, conn: Conn, events: Sequence[MailEvent]) -> None:
    if events:
        conn.cursor().executemany(d.sql(EVENT_INSERT), [event_params(e) for e in events])


def events_of(d: Dialect, queue_id: str, conn: Conn) -> list[MailEvent]:
    sql = f"SELECT {_EVENT_COLUMNS} FROM {_EVENT_FROM} WHERE e.queue_id = ? ORDER BY e.seq"
    return [_event(row[1:]) for row in conn.execute(d.sql(sql), (queue_id,)).fetchall()]


# A provider's status -> the catalogue's type ("other" is not an event).
_PROVIDER_TYPES = {
    "delivered": EventType.DELIVERED,
    "bounced": EventType.BOUNCED,
    "deferred": EventType.DEFERRED,
    "complained": EventType.COMPLAINED,
    "opened": EventType.OPENED,
    "clicked": EventType.CLICKED,
    "unsubscribed": EventType.UNSUBSCRIBED,
}


def provider_event(record: ProviderEventRecord, queue_id: str | None) -> MailEvent | None:
    """The catalogue's event for a provider's callback, or None for a status it has not."""
    kind = _PROVIDER_TYPES.get(record.status)
    if kind is None:
        return None
    return MailEvent(
        id=new_event_id(),
        type=kind,
        at=record.at,
        recipient=record.recipient,
        queue_id=queue_id,
        mailer=record.mailer,
        reply=record.detail,
        reason=record.kind,
        origin=EventOrigin.PROVIDER,
        details=(("provider_id", record.provider_id),),
    )


# -- webhook deliveries ----------------------------------------------------------------------
_PENDING = WebhookState.PENDING.value


def has_new_events(conn: Conn) -> bool:
    """Whether any event waits to be fanned out (a read, so an idle round writes nothing)."""
    return conn.execute("SELECT 1 FROM events WHERE fanned = 0 LIMIT 1").fetchone() is not None


def fan_out(d: Dialect, route: Any, limit: int, now: float, conn: Conn) -> int:
    """``route``: MailEvent -> webhook names (base.EventRoute), or None: no webhook."""
    if route is None:
        return _mark_fanned(d, limit, conn)
    sql = (
        f"SELECT {_EVENT_COLUMNS} FROM {_EVENT_FROM} WHERE e.fanned = 0"
        f" ORDER BY e.seq LIMIT ?{d.locking('e')}"
    )
    rows = conn.execute(d.sql(sql), (limit,)).fetchall()
    deliveries: list[tuple[Any, ...]] = []
    for row in rows:
        event = _event(row[1:])
        deliveries.extend(
            (name, row[0], event.queue_id, _PENDING, now, now) for name in route(event)
        )
    if deliveries:
        conn.cursor().executemany(
            d.sql(
                "INSERT INTO webhook_deliveries (webhook, seq, queue_id, state, attempts,"
                " created_at, next_at) VALUES (?, ?, ?, ?, 0, ?, ?) ON CONFLICT DO NOTHING"
            ),
            deliveries,
        )
    if rows:
        conn.cursor().executemany(
            d.sql("UPDATE events SET fanned = 1 WHERE seq = ?"), [(row[0],) for row in rows]
        )
    return len(rows)


def _mark_fanned(d: Dialect, limit: int, conn: Conn) -> int:
    """Mark the oldest ``limit`` new events fanned out with no delivery: one statement,
    no event read back (two a message, each with two joins, where nothing wants them)."""
    sql = (
        "UPDATE events SET fanned = 1 WHERE seq IN (SELECT e.seq FROM events e"
        f" WHERE e.fanned = 0 ORDER BY e.seq LIMIT ?{d.locking('e')})"
    )
    return int(conn.execute(d.sql(sql), (limit,)).rowcount)


_DELIVERY_COLUMNS = (
    "d.webhook, d.state, d.attempts, d.next_at, d.last_at, d.last_status, d.last_error,"
    " d.created_at"
)


def _delivery(row: Sequence[Any]) -> WebhookDelivery:
    webhook, state, attempts, next_at, last_at, last_status, last_error, created_at = row[:8]
    pending = state == _PENDING
    return WebhookDelivery(
        webhook=webhook,
        event=_event(row[9:]),  # row[8] is the event's seq
        created_at=created_at,
        state=WebhookState(state),
        attempts=attempts,
        next_attempt_at=next_at if pending else None,
        last_attempt_at=last_at,
        last_status=last_status,
        last_error=last_error or "",
    )


def has_due_deliveries(d: Dialect, now: float, conn: Conn) -> bool:
    """Whether a claim at ``now`` could find anything (a read: an idle round writes nothing)."""
    sql = (
        "SELECT 1 FROM webhook_deliveries WHERE state = ? AND next_at <= ?"
        " AND (claimed_until IS NULL OR claimed_until <= ?) LIMIT 1"
    )
    return conn.execute(d.sql(sql), (_PENDING, now, now)).fetchone() is not None


def claim_deliveries(
    d: Dialect, now: float, limit: int, until: float, conn: Conn
) -> list[WebhookDelivery]:
    due = (
        "SELECT d.webhook, d.seq FROM webhook_deliveries d"
        " WHERE d.state = ? AND d.next_at <= ?"
        " AND (d.claimed_until IS NULL OR d.claimed_until <= ?)"
        " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.webhook = d.webhook"
        " AND p.queue_id = d.queue_id AND p.state = ? AND p.seq < d.seq)"
        f" ORDER BY d.seq LIMIT ?{d.locking('d')}"
    )
    keys = conn.execute(d.sql(due), (_PENDING, now, now, _PENDING, limit)).fetchall()
    if not keys:
        return []
    conn.cursor().executemany(
        d.sql("UPDATE webhook_deliveries SET claimed_until = ? WHERE webhook = ? AND seq = ?"),
        [(until, webhook, seq) for webhook, seq in keys],
    )
    claimed: list[WebhookDelivery] = []
    one = (
        f"SELECT {_DELIVERY_COLUMNS}, {_EVENT_COLUMNS} FROM {_DELIVERY_FROM}"
        " WHERE d.webhook = ? AND d.seq = ?"
    )
    for webhook, seq in keys:
        claimed.append(_delivery(conn.execute(d.sql(one), (webhook, seq)).fetchone()))
    return claimed


def record_attempt(d: Dialect, attempt: WebhookAttempt, conn: Conn) -> None:
    if attempt.ok:
        state = WebhookState.DELIVERED
    elif attempt.next_attempt_at is not None:
        state = WebhookState.PENDING
    else:
        state = WebhookState.FAILED
    next_at = attempt.next_attempt_at if attempt.next_attempt_at is not None else attempt.at
    conn.execute(
        d.sql(
            "UPDATE webhook_deliveries SET state = ?, attempts = attempts + 1, next_at = ?,"
            " claimed_until = NULL, last_at = ?, last_status = ?, last_error = ?"
            " WHERE webhook = ? AND seq = (SELECT seq FROM events WHERE id = ?)"
        ),
        (
            state.value,
            next_at,
            attempt.at,
            attempt.status,
            attempt.error,
            attempt.webhook,
            attempt.event_id,
        ),
    )


def webhook_deliveries(
    d: Dialect,
    limit: int,
    conn: Conn,
    *,
    webhook: str | None,
    state: WebhookState | None,
    queue_id: str | None,
) -> list[WebhookDelivery]:
    where, params = ["1 = 1"], []
    if queue_id is not None:  # the webhook_deliveries_message index
        where.append("d.queue_id = ?")
        params.append(queue_id)
    if webhook is not None:
        where.append("d.webhook = ?")
        params.append(webhook)
    if state is not None:
        where.append("d.state = ?")
        params.append(state.value)
    sql = (
        f"SELECT {_DELIVERY_COLUMNS}, {_EVENT_COLUMNS} FROM {_DELIVERY_FROM}"
        f" WHERE {' AND '.join(where)}"
        " ORDER BY d.seq DESC, d.webhook LIMIT ?"
    )
    return [_delivery(row) for row in conn.execute(d.sql(sql), (*params, limit)).fetchall()]


def purge_events(d: Dialect, before: float, conn: Conn) -> int:
    finished = (
        "SELECT e.seq FROM events e WHERE e.at < ? AND e.fanned = 1 AND NOT EXISTS"
        " (SELECT 1 FROM webhook_deliveries w WHERE w.seq = e.seq AND w.state = ?)"
    )
    params = (before, _PENDING)
    conn.execute(d.sql(f"DELETE FROM webhook_deliveries WHERE seq IN ({finished})"), params)
    cursor = conn.execute(d.sql(f"DELETE FROM events WHERE seq IN ({finished})"), params)
    return int(cursor.rowcount)


_COMPLAINTS = (
    "SELECT e.at, e.mailer, m.sender FROM events e LEFT JOIN messages m ON m.id = e.queue_id"
    " WHERE e.type = 'complained' AND e.at >= ?"
)


def complaint_counts(d: Dialect, since: float, bucket: float, conn: Conn) -> list[AttemptCount]:
    """Counted here, not in SQL: the engines round a slot's start differently, and the
    rows are few (the complaints of the window, from the events_complained index)."""
    if bucket <= 0:
        raise ValueError(f"a slot of {bucket} seconds")
    tally: dict[tuple[float, str, str], int] = {}
    for at, mailer, sender in conn.execute(d.sql(_COMPLAINTS), ((since // bucket) * bucket,)):
        domain = sender.rpartition("@")[2].lower() if sender else ""
        key = ((at // bucket) * bucket, mailer or "", domain)
        tally[key] = tally.get(key, 0) + 1
    return [
        AttemptCount(slot, mailer, domain, "complained", count)
        for (slot, mailer, domain), count in sorted(tally.items())
    ]


def webhook_backlog(d: Dialect, conn: Conn) -> dict[str, int]:
    backlog: dict[str, int] = {
        webhook: count
        for webhook, count in conn.execute(
            d.sql(
                "SELECT webhook, count(*) FROM webhook_deliveries WHERE state = ? GROUP BY webhook"
            ),
            (_PENDING,),
        ).fetchall()
    }
    row = conn.execute("SELECT count(*) FROM events WHERE fanned = 0").fetchone()
    backlog[""] = int(row[0])
    return backlog


# -- the suppression list --------------------------------------------------------------------
_SUPPRESSION_COLUMNS = "address, scope, reason, source, created_at, detail"


def _suppression(row: Sequence[Any]) -> Suppression:
    address, scope, reason, source, created_at, detail = row
    return Suppression(address, scope, SuppressionReason(reason), source, created_at, detail)


def add_suppression(d: Dialect, entry: Suppression, conn: Conn) -> bool:
    key = (entry.address.lower(), entry.scope.lower())
    existed = conn.execute(
        d.sql("SELECT 1 FROM suppressions WHERE address = ? AND scope = ?"), key
    ).fetchone()
    conn.execute(
        d.sql(
            f"INSERT INTO suppressions ({_SUPPRESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (address, scope) DO UPDATE SET reason = excluded.reason,"
            " source = excluded.source, detail = excluded.detail"
        ),
        (*key, entry.reason.value, entry.source, entry.created_at, entry.detail),
    )
    return existed is None


def remove_suppression(d: Dialect, address: str, scope: str, conn: Conn) -> bool:
    cursor = conn.execute(
        d.sql("DELETE FROM suppressions WHERE address = ? AND scope = ?"),
        (address.lower(), scope.lower()),
    )
    return bool(cursor.rowcount)


def suppressions(
    d: Dialect,
    scope: str | None,
    address: str | None,
    page: tuple[int, tuple[str, str] | None],
    conn: Conn,
) -> list[Suppression]:
    """``page``: (limit, the last (address, scope) of the previous page)."""
    limit, after = page
    where, params = ["1 = 1"], []
    if scope is not None:
        where.append("scope = ?")
        params.append(scope.lower())
    if address is not None:
        where.append("address = ?")
        params.append(address.lower())
    if after is not None:
        where.append("(address, scope) > (?, ?)")
        params.extend(after)
    sql = (
        f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions WHERE {' AND '.join(where)}"
        " ORDER BY address, scope LIMIT ?"
    )
    return [_suppression(row) for row in conn.execute(d.sql(sql), (*params, limit)).fetchall()]


def suppressed(
    d: Dialect, addresses: Collection[str], sender_domain: str | None, conn: Conn
) -> dict[str, Suppression]:
    wanted: dict[str, list[str]] = {}
    for address in addresses:
        wanted.setdefault(address.lower(), []).append(address)
    if not wanted:
        return {}
    scopes = ["", sender_domain.lower()] if sender_domain else [""]
    sql = (
        f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions"
        f" WHERE address IN ({', '.join('?' for _ in wanted)})"
        f" AND scope IN ({', '.join('?' for _ in scopes)}) ORDER BY address, scope"
    )
    found: dict[str, Suppression] = {}
    for row in conn.execute(d.sql(sql), (*wanted, *scopes)).fetchall():
        entry = _suppression(row)
        for given in wanted.get(entry.address, ()):
            found.setdefault(given, entry)  # "" sorts first: a global entry wins
    return found
