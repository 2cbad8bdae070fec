"""Each mailer's health from the email log: its last success, its last error, and the
messages it had accepted since a time (for ``postroom mailer status``)."""

from __future__ import annotations

import sqlite3

from postroom.store.models import MailerHealth

__all__ = ["mailer_health"]

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
