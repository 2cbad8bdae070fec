"""Counts read the same way on every engine: the summary report's (each engine gives its
own expression for the recipient's domain and its parameter mark, and reads the rows back
through ``totals``), the queue's depth (``queue_summary``) and each mailer's health
(``mailer_health``). The last two read indexes and counters, never the whole log."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from postroom.store.models import (
    AttemptTally,
    AttemptTotals,
    FailureReason,
    MailerHealth,
    QueueSummary,
)

__all__ = [
    "MESSAGES_COUNTED",
    "SENT",
    "counts_sql",
    "mailer_health",
    "queue_summary",
    "reasons_sql",
    "totals",
]


def counts_sql(domain: str, mark: str) -> str:
    """``domain``: the SQL expression of the recipient's domain; ``mark``: ``?`` or ``%s``."""
    return (
        f"SELECT mailer, lower({domain}) AS domain, disposition, COUNT(*) FROM attempts"
        f" WHERE at >= {mark} AND at < {mark}"
        " GROUP BY mailer, lower({domain}), disposition"
        " ORDER BY mailer, domain, disposition"
    ).replace("{domain}", domain)


def reasons_sql(mark: str) -> str:
    return (
        "SELECT code, enhanced, COUNT(*), MIN(text) FROM attempts"
        f" WHERE disposition != 'delivered' AND at >= {mark} AND at < {mark}"
        f" GROUP BY code, enhanced ORDER BY COUNT(*) DESC, code, enhanced LIMIT {mark}"
    )


def totals(counts: Iterable[Any], reasons: Iterable[Any]) -> AttemptTotals:
    return AttemptTotals(
        counts=tuple(AttemptTally(m, d or "", disp, int(n)) for m, d, disp, n in counts),
        reasons=tuple(
            FailureReason(code, enhanced, int(n), text or "") for code, enhanced, n, text in reasons
        ),
    )


# Waiting messages are counted from the recipients_waiting index up to this many (a few
# milliseconds); beyond, QueueSummary.more_messages says so. Recipients are always exact:
# the triggers keep their counts in queue_totals.
MESSAGES_COUNTED = 10_000
_WAITING = "status IN ('queued', 'deferred')"
_TOTALS = "SELECT status, held, sum(recipients) FROM queue_totals GROUP BY status, held"
_OLDEST = (
    f"SELECT m.id, m.received_at FROM messages m WHERE m.id ="
    f" (SELECT min(message_id) FROM recipients WHERE {_WAITING})"
)


def queue_summary(conn: Any, mark: str) -> QueueSummary:
    """``conn``: a connection of either engine; ``mark``: its parameter mark."""
    counts = {"queued": 0, "deferred": 0, "held": 0}
    for status, held, recipients in conn.execute(_TOTALS):
        counts["held" if held else status] += int(recipients)
    messages = 0
    if any(counts.values()):
        messages = conn.execute(
            f"SELECT count(*) FROM (SELECT DISTINCT message_id FROM recipients"
            f" WHERE {_WAITING} LIMIT {mark}) AS waiting",
            (MESSAGES_COUNTED + 1,),
        ).fetchone()[0]
    oldest = conn.execute(_OLDEST).fetchone() if messages else None
    return QueueSummary(
        queued=counts["queued"],
        deferred=counts["deferred"],
        held=counts["held"],
        messages=min(messages, MESSAGES_COUNTED),
        oldest_id=oldest[0] if oldest is not None else None,
        oldest_received_at=oldest[1] if oldest is not None else None,
        more_messages=messages > MESSAGES_COUNTED,
    )


# The mailers, and each one's outcomes, by skipping through the attempts_mailer index
# (mailer, disposition, at): a lookup per name, however long the log.
_NEXT_MAILER = "SELECT min(mailer) FROM attempts WHERE mailer > {m}"
_NEXT_OUTCOME = "SELECT min(disposition) FROM attempts WHERE mailer = {m} AND disposition > {m}"
_LAST = (
    "SELECT at, text FROM attempts WHERE mailer = {m} AND disposition = {m}"
    " ORDER BY at DESC, id DESC LIMIT 1"
)
# Messages, not recipients: the recipients of one message delivered together count once.
# From the attempts_delivered index alone.
SENT = (
    "SELECT count(*) FROM (SELECT DISTINCT message_id, at FROM attempts"
    " WHERE mailer = {m} AND disposition = 'delivered' AND at >= {m}) AS sent"
)


def mailer_health(conn: Any, mark: str, since: float) -> list[MailerHealth]:
    """``conn``: a connection of either engine; ``mark``: its parameter mark."""

    def one(sql: str, *params: object) -> Any:
        return conn.execute(sql.format(m=mark), params).fetchone()

    found = []
    name = one(_NEXT_MAILER, "")[0]
    while name is not None:
        last: dict[str, tuple[float, str]] = {}
        outcome = one(_NEXT_OUTCOME, name, "")[0]
        while outcome is not None:
            last[outcome] = one(_LAST, name, outcome)
            outcome = one(_NEXT_OUTCOME, name, outcome)[0]
        ok = last.pop("delivered", (None, None))
        bad = max(last.values(), default=(None, None), key=lambda row: row[0] or 0.0)
        sent = one(SENT, name, since)[0]
        found.append(MailerHealth(name, ok[0], ok[1], bad[0], bad[1], int(sent)))
        name = one(_NEXT_MAILER, name)[0]
    return found
