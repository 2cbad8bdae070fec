"""Delivery state: claims and leases, outcomes, holds, retries, deletion, retention.

Functions ending in ``_job`` build writer jobs (run on the writer thread inside a
``BEGIN IMMEDIATE`` transaction); the others are reads for a reader connection.

A lease is live while ``now < claimed_until``; at ``claimed_until`` it has ended.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple

from postroom.mail.events import MailEvent
from postroom.store import outbox
from postroom.store.models import Attempt, Claim, RecipientUpdate
from postroom.store.rows import ATTEMPT_FIELDS, CLAIM_BODY_MAX, HAS_BODY, outcome_rows
from postroom.store.sqlite.queue import IN_IDS, ids_param, load_messages

__all__ = [
    "OutcomeRows",
    "attempts_of",
    "claim_job",
    "delete_job",
    "hold_all_job",
    "hold_job",
    "next_due",
    "outcome_rows_of",
    "purge_candidates",
    "purge_job",
    "read_attempts",
    "record_job",
    "record_rows_job",
    "release_job",
    "renew_job",
    "retry_job",
]

# The recipients_pending index's WHERE clause, written exactly as in schema.sql: SQLite
# uses a partial index only when the query repeats its terms literally.
PENDING = "status IN ('queued', 'deferred')"
CLAIMABLE = f"{PENDING} AND held = 0"
_LEASE_ENDED = "(claimed_until IS NULL OR claimed_until <= :now)"
DUE = f"{CLAIMABLE} AND next_attempt_at <= :now AND {_LEASE_ENDED}"
_FETCH = 256  # due rows read per step while picking messages to claim

_ATTEMPT_COLUMNS = ", ".join(ATTEMPT_FIELDS)
_INSERT_ATTEMPT = (
    f"INSERT INTO attempts ({_ATTEMPT_COLUMNS}) VALUES ({', '.join('?' for _ in ATTEMPT_FIELDS)})"
)
# A late outcome never reopens a final recipient (another process may have settled it
# after this one's lease ran out).
_UPDATE_RECIPIENT = (
    "UPDATE recipients SET status = ?, next_attempt_at = ?, last_reply = ?,"
    " delay_warned = max(delay_warned, ?), attempts = attempts + ?, claimed_until = NULL"
    f" WHERE message_id = ? AND address = ? AND {PENDING}"
)

# Is the message still there, and is an outcome's first event (by its unique id) not
# stored yet? One statement: each is a release and re-take of the GIL on the writer.
_STILL_TO_RECORD = (
    "SELECT (SELECT 1 FROM messages WHERE id = ?), (SELECT 1 FROM events WHERE id = ?)"
)

Job = Callable[[sqlite3.Connection], Any]


# -- claims ---------------------------------------------------------------------------------
def claim_job(
    now: float, limit: int, lease_until: float
) -> Callable[[sqlite3.Connection], list[Claim]]:
    def claim(conn: sqlite3.Connection) -> list[Claim]:
        picked = _pick_due_messages(conn, now, limit)
        if not picked:
            return []
        leased: dict[str, set[int]] = {}
        for message_id, position in conn.execute(
            f"UPDATE recipients SET claimed_until = :until"
            f" WHERE message_id IN (SELECT value FROM json_each(:ids)) AND {DUE}"
            " RETURNING message_id, position",
            {"until": lease_until, "ids": ids_param(picked), "now": now},
        ).fetchall():
            leased.setdefault(message_id, set()).add(position)
        loaded = load_messages(conn, picked)
        small = [i for i, (message, _) in loaded.items() if message.size <= CLAIM_BODY_MAX]
        bodies = _inline_bodies(conn, small)
        claims = []
        for message_id in picked:
            message, positions = loaded[message_id]
            mine = leased.get(message_id, set())
            due = tuple(
                state
                for position, state in zip(positions, message.recipients, strict=True)
                if position in mine
            )
            claims.append(Claim(message, due, lease_until, bodies.get(message_id)))
        return claims

    return claim


def _inline_bodies(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, bytes]:
    if not ids:
        return {}
    sql = f"SELECT id, data FROM message_bodies WHERE id IN {IN_IDS}"
    return {row[0]: bytes(row[1]) for row in conn.execute(sql, (ids_param(ids),))}


def _pick_due_messages(conn: sqlite3.Connection, now: float, limit: int) -> list[str]:
    """Up to ``limit`` message ids in the order of their earliest due recipient.

    Walks the due index and stops as soon as it has enough: the cost follows ``limit``,
    not the size of a backlog."""
    picked: dict[str, None] = {}
    cursor = conn.execute(
        f"SELECT message_id FROM recipients WHERE {DUE} ORDER BY next_attempt_at",
        {"now": now},
    )
    try:
        while len(picked) < limit and (rows := cursor.fetchmany(_FETCH)):
            for (message_id,) in rows:
                picked[message_id] = None
                if len(picked) == limit:
                    break
    finally:
        cursor.close()
    return list(picked)


def next_due(conn: sqlite3.Connection) -> float | None:
    """When the next claim can find something: the earliest due time of an unleased
    pending recipient, or the end of a lease (a crashed claimer's recipients)."""
    free = conn.execute(
        f"SELECT next_attempt_at FROM recipients WHERE {CLAIMABLE}"
        " AND claimed_until IS NULL AND next_attempt_at IS NOT NULL"
        " ORDER BY next_attempt_at LIMIT 1"
    ).fetchone()
    leased = conn.execute(
        "SELECT min(max(next_attempt_at, claimed_until)) FROM recipients"
        f" WHERE claimed_until IS NOT NULL AND {CLAIMABLE}"
    ).fetchone()
    times = [t for t in (free and free[0], leased[0]) if t is not None]
    return min(times) if times else None


# -- outcomes and leases ------------------------------------------------------------------
class OutcomeRows(NamedTuple):
    """One message's outcomes as the plain values of their rows: built by the process
    that delivered, recorded by whichever process writes (an accept worker hands them
    to the primary's writer, see ``sharedwriter``)."""

    message_id: str
    recipients: list[tuple[Any, ...]]  # _UPDATE_RECIPIENT's parameters
    attempts: list[tuple[Any, ...]]  # _INSERT_ATTEMPT's
    events: list[tuple[Any, ...]]  # outbox.EVENT_INSERT's


def outcome_rows_of(
    message_id: str,
    updates: Sequence[RecipientUpdate],
    attempts: Sequence[Attempt],
    events: Sequence[MailEvent],
) -> OutcomeRows:
    recipient_rows, attempt_rows = outcome_rows(message_id, updates, attempts)
    event_rows = [outbox.event_params(event) for event in events]
    return OutcomeRows(message_id, recipient_rows, attempt_rows, event_rows)


def record_job(
    message_id: str,
    updates: Sequence[RecipientUpdate],
    attempts: Sequence[Attempt],
    events: Sequence[MailEvent],
) -> Job:
    return record_rows_job(outcome_rows_of(message_id, updates, attempts, events))


def record_rows_job(rows: OutcomeRows) -> Job:
    """The writer job that records a message's outcomes given as their rows. Rows
    written twice (sent to the primary's writer, whose answer was lost, then written
    here) are recorded once: their first event's id is unique."""
    message_id, recipients, attempts, events = rows
    first_event = events[0][0] if events else None

    def record(conn: sqlite3.Connection) -> None:
        stored, recorded = conn.execute(_STILL_TO_RECORD, (message_id, first_event)).fetchone()
        if stored is None or recorded is not None:
            return  # deleted while it was being tried (nothing to record against), or done
        conn.executemany(_UPDATE_RECIPIENT, recipients)
        conn.executemany(_INSERT_ATTEMPT, attempts)
        if events:
            conn.executemany(outbox.SQLITE.sql(outbox.EVENT_INSERT), events)

    return record


def release_job(message_id: str, addresses: Collection[str]) -> Job:
    def release(conn: sqlite3.Connection) -> None:
        conn.execute(
            f"UPDATE recipients SET claimed_until = NULL WHERE message_id = ?"
            f" AND address IN {IN_IDS} AND claimed_until IS NOT NULL",
            (message_id, ids_param(addresses)),
        )

    return release


def renew_job(
    leases: Mapping[str, Collection[str]], now: float, until: float
) -> Callable[[sqlite3.Connection], int]:
    """Move the live leases of these recipients (message id -> addresses) to ``until``.
    A lease that has already ended is not revived: another claimer may hold it now."""
    rows = [
        (until, message_id, ids_param(addresses), now) for message_id, addresses in leases.items()
    ]

    def renew(conn: sqlite3.Connection) -> int:
        renewed = 0
        for params in rows:
            renewed += conn.execute(
                "UPDATE recipients SET claimed_until = ? WHERE message_id = ?"
                f" AND address IN {IN_IDS} AND claimed_until > ? AND {PENDING}",
                params,
            ).rowcount
        return renewed

    return renew


def hold_job(message_id: str, held: bool) -> Callable[[sqlite3.Connection], bool]:
    def hold(conn: sqlite3.Connection) -> bool:
        found = conn.execute("UPDATE messages SET held = ? WHERE id = ?", (held, message_id))
        if found.rowcount == 0:
            return False
        conn.execute("UPDATE recipients SET held = ? WHERE message_id = ?", (held, message_id))
        return True

    return hold


def hold_all_job(held: bool) -> Callable[[sqlite3.Connection], int]:
    """Hold every message with a pending recipient (``held``), or release every held
    message; the number of messages changed. Messages queued later are not held."""
    if held:
        pick = f"SELECT DISTINCT message_id FROM recipients WHERE {CLAIMABLE}"
    else:
        pick = "SELECT id FROM messages WHERE held = 1"

    def hold_all(conn: sqlite3.Connection) -> int:
        ids = ids_param(row[0] for row in conn.execute(pick))
        conn.execute(f"UPDATE recipients SET held = ? WHERE message_id IN {IN_IDS}", (held, ids))
        return conn.execute(
            f"UPDATE messages SET held = ? WHERE id IN {IN_IDS}", (held, ids)
        ).rowcount

    return hold_all


def retry_job(message_id: str | None, now: float) -> Callable[[sqlite3.Connection], int]:
    """Pending, unheld, unleased recipients become due at ``now`` (those due earlier keep
    their place in line); the count is what a claim at ``now`` would find."""
    where = f"{CLAIMABLE} AND {_LEASE_ENDED}"
    params: dict[str, Any] = {"now": now}
    if message_id is not None:
        where += " AND message_id = :id"
        params["id"] = message_id

    def retry(conn: sqlite3.Connection) -> int:
        sql = (
            "UPDATE recipients SET next_attempt_at = min(coalesce(next_attempt_at, :now), :now)"
            f" WHERE {where}"
        )
        return conn.execute(sql, params).rowcount

    return retry


# -- removal ------------------------------------------------------------------------------
def _remove_bodies(conn: sqlite3.Connection, ids: str) -> int:
    """Delete only the bodies: the log (envelope, recipients, attempts) stays."""
    return conn.execute(f"DELETE FROM message_bodies WHERE id IN {IN_IDS}", (ids,)).rowcount


def _remove(conn: sqlite3.Connection, ids: str) -> int:
    """Delete the messages in the JSON list ``ids`` and everything that hangs on them."""
    conn.execute(f"DELETE FROM attempts WHERE message_id IN {IN_IDS}", (ids,))
    conn.execute(f"DELETE FROM provider_events WHERE message_id IN {IN_IDS}", (ids,))
    conn.execute(f"DELETE FROM recipients WHERE message_id IN {IN_IDS}", (ids,))
    conn.execute(f"DELETE FROM message_bodies WHERE id IN {IN_IDS}", (ids,))
    return conn.execute(f"DELETE FROM messages WHERE id IN {IN_IDS}", (ids,)).rowcount


def delete_job(message_id: str) -> Callable[[sqlite3.Connection], bool]:
    def delete(conn: sqlite3.Connection) -> bool:
        return _remove(conn, ids_param([message_id])) > 0

    return delete


_PURGEABLE = (
    "m.received_at < ? AND NOT EXISTS"
    f" (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.{PENDING})"
)
_WITH_BODY = f"{_PURGEABLE} AND {HAS_BODY}"


def purge_candidates(before: float, conn: sqlite3.Connection, *, bodies: bool = False) -> list[str]:
    """Finished messages received before ``before`` (read on a reader: no write lock);
    ``bodies``: those of them whose body is still there."""
    sql = f"SELECT m.id FROM messages m WHERE {_WITH_BODY if bodies else _PURGEABLE} ORDER BY m.id"
    return [row[0] for row in conn.execute(sql, (before,))]


def purge_job(
    before: float, candidates: Sequence[str], *, bodies: bool = False
) -> Callable[[sqlite3.Connection], int]:
    """Remove those candidates that still qualify, checked again under the write lock:
    the whole message, or (``bodies``) its body only."""
    remove = _remove_bodies if bodies else _remove

    def purge(conn: sqlite3.Connection) -> int:
        rows = conn.execute(
            f"SELECT m.id FROM messages m WHERE m.id IN {IN_IDS} AND {_PURGEABLE}",
            (ids_param(candidates), before),
        ).fetchall()
        return remove(conn, ids_param(row[0] for row in rows)) if rows else 0

    return purge


# -- the timeline ---------------------------------------------------------------------------
def attempts_of(message_id: str, conn: sqlite3.Connection) -> list[Attempt]:
    return read_attempts(conn, "WHERE message_id = ? ORDER BY at, id", (message_id,))


def read_attempts(conn: sqlite3.Connection, where: str, params: Sequence[object]) -> list[Attempt]:
    """Attempt rows chosen by ``where`` (the rest of the SELECT after its FROM)."""
    sql = f"SELECT {_ATTEMPT_COLUMNS} FROM attempts {where}"
    return [
        Attempt(**dict(zip(ATTEMPT_FIELDS, row, strict=True))) for row in conn.execute(sql, params)
    ]
