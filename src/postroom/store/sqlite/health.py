"""How delivery is doing, from the queue and the email log: each mailer's last success,
last error and the messages it had accepted since a time (``postroom mailer status``);
what waits in the queue and the latest failed attempts (``postroom status``)."""

from __future__ import annotations

import sqlite3

from postroom.store import totals
from postroom.store.models import Attempt, AttemptCount, AttemptTotals, MailerHealth, QueueSummary
from postroom.store.rows import attempt_count_of, attempt_counts_sql, rollup_params
from postroom.store.sqlite.delivery import read_attempts

__all__ = ["attempt_counts", "attempt_totals", "mailer_health", "queue_summary", "recent_failures"]


def mailer_health(since: float, conn: sqlite3.Connection) -> list[MailerHealth]:
    return totals.mailer_health(conn, "?", since)


# The attempts_failed index's WHERE clause, written exactly as in schema.sql.
_FAILED = "disposition != 'delivered'"


def queue_summary(conn: sqlite3.Connection) -> QueueSummary:
    return totals.queue_summary(conn, "?")


def recent_failures(limit: int, conn: sqlite3.Connection) -> list[Attempt]:
    return read_attempts(conn, f"WHERE {_FAILED} ORDER BY at DESC, id DESC LIMIT ?", (limit,))


_ATTEMPT_COUNTS = attempt_counts_sql("?")


def attempt_counts(since: float, bucket: float, conn: sqlite3.Connection) -> list[AttemptCount]:
    rows = conn.execute(_ATTEMPT_COUNTS, rollup_params(since, bucket)).fetchall()
    return [attempt_count_of(row) for row in rows]


_COUNTS = totals.counts_sql("substr(recipient, instr(recipient, '@') + 1)", "?")
_REASONS = totals.reasons_sql("?")


def attempt_totals(
    since: float, until: float, reasons: int, conn: sqlite3.Connection
) -> AttemptTotals:
    return totals.totals(
        conn.execute(_COUNTS, (since, until)), conn.execute(_REASONS, (since, until, reasons))
    )
