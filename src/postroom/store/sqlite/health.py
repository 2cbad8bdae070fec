"""How delivery is doing, from the queue and the email log: each mailer's last success,
last error and the messages it had accepted since a time (``postroom mailer status``);
what waits in the queue and the latest failed attempts (``postroom status``)."""

from __future__ import annotations

import sqlite3

from postroom.store import totals
from postroom.store.models import Attempt, AttemptCount, AttemptTotals, MailerHealth, QueueSummary
from postroom.store.rows import attempt_count_of, attempt_counts_sql
from postroom.store.sqlite.delivery import CLAIMABLE, PENDING, read_attempts

__all__ = ["attempt_counts", "attempt_totals", "mailer_health", "queue_summary", "recent_failures"]

# SQLite takes a bare column of a MAX() aggregate from the row that holds the maximum.
_LAST = (
    "SELECT mailer, MAX(at), text FROM attempts WHERE {which} GROUP BY mailer"
)  # fmt: skip
_SENT = (
    "SELECT mailer, COUNT(DISTINCT message_id || ' ' || at) FROM attempts"
    " WHERE disposition = 'delivered' AND at >= ? GROUP BY mailer"
)


def mailer_health(since: float, conn: sqlite3.Connection) -> list[MailerHealth]:
    ok = {
        m: (at, text)
        for m, at, text in conn.execute(_LAST.format(which="disposition = 'delivered'"))
    }
    bad = {
        m: (at, text)
        for m, at, text in conn.execute(_LAST.format(which="disposition != 'delivered'"))
    }
    sent = dict(conn.execute(_SENT, (since,)).fetchall())
    return [
        MailerHealth(
            mailer=name,
            last_success_at=ok.get(name, (None, None))[0],
            last_success=ok.get(name, (None, None))[1],
            last_error_at=bad.get(name, (None, None))[0],
            last_error=bad.get(name, (None, None))[1],
            sent_since=sent.get(name, 0),
        )
        for name in sorted(ok.keys() | bad.keys())
    ]


# Unheld waiting recipients through the recipients_pending index; held ones through the
# messages_held index (both small next to the log of final recipients).
_WAITING = (
    f"SELECT status, COUNT(*), MIN(message_id) FROM recipients WHERE {CLAIMABLE} GROUP BY status"
)
_HELD = (
    "SELECT COUNT(*), COUNT(DISTINCT r.message_id), MIN(r.message_id) FROM messages m"
    f" JOIN recipients r ON r.message_id = m.id WHERE m.held = 1 AND r.{PENDING}"
)
# The attempts_failed index's WHERE clause, written exactly as in schema.sql.
_FAILED = "disposition != 'delivered'"


def queue_summary(conn: sqlite3.Connection) -> QueueSummary:
    counts = {"queued": 0, "deferred": 0}
    messages = 0  # a message with both queued and deferred recipients counts once below
    firsts: list[str] = []
    for status, recipients, first in conn.execute(_WAITING):
        counts[status] = recipients
        firsts.append(first)
    held, held_messages, first_held = conn.execute(_HELD).fetchone()
    if first_held is not None:
        firsts.append(first_held)
    if counts["queued"] or counts["deferred"]:
        messages = conn.execute(
            f"SELECT COUNT(DISTINCT message_id) FROM recipients WHERE {CLAIMABLE}"
        ).fetchone()[0]
    oldest = min(firsts, default=None)  # queue ids are time-ordered
    received = None
    if oldest is not None:
        row = conn.execute("SELECT received_at FROM messages WHERE id = ?", (oldest,)).fetchone()
        received = row[0] if row is not None else None
    return QueueSummary(
        queued=counts["queued"],
        deferred=counts["deferred"],
        held=held,
        messages=messages + held_messages,
        oldest_id=oldest,
        oldest_received_at=received,
    )


def recent_failures(limit: int, conn: sqlite3.Connection) -> list[Attempt]:
    return read_attempts(conn, f"WHERE {_FAILED} ORDER BY at DESC, id DESC LIMIT ?", (limit,))


_ATTEMPT_COUNTS = attempt_counts_sql(
    "?", "CAST(a.at / ? AS INTEGER) * ?", "substr(m.sender, instr(m.sender, '@') + 1)"
)


def attempt_counts(since: float, bucket: float, conn: sqlite3.Connection) -> list[AttemptCount]:
    rows = conn.execute(_ATTEMPT_COUNTS, (bucket, bucket, since)).fetchall()
    return [attempt_count_of(row) for row in rows]


_COUNTS = totals.counts_sql("substr(recipient, instr(recipient, '@') + 1)", "?")
_REASONS = totals.reasons_sql("?")


def attempt_totals(
    since: float, until: float, reasons: int, conn: sqlite3.Connection
) -> AttemptTotals:
    return totals.totals(
        conn.execute(_COUNTS, (since, until)), conn.execute(_REASONS, (since, until, reasons))
    )
