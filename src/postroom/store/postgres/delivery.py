"""Delivery state on PostgreSQL: claims and leases, outcomes, holds, retries, removal.

Functions ending in ``_job`` build writer jobs (run inside a group-commit batch's
transaction); the others are reads. A lease is live while ``now < claimed_until``.

Several nodes claim from one database: a claim walks the due recipients in due order
with ``FOR UPDATE SKIP LOCKED``, so rows another node is claiming at this moment are
passed over rather than waited for, and the lease it writes keeps them from every other
claim once committed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from postroom.mail.events import MailEvent
from postroom.store import outbox, totals
from postroom.store.models import Attempt, Claim, QueueSummary, RecipientUpdate
from postroom.store.postgres.arrays import EVENT_COLUMNS, FLOAT, TEXT, columns_of, names, unnest
from postroom.store.postgres.connection import Conn
from postroom.store.postgres.queue import NOTIFY_QUEUE, load_messages
from postroom.store.rows import ATTEMPT_FIELDS, CLAIM_BODY_MAX, HAS_BODY, outcome_rows

__all__ = [
    "Record",
    "attempts_of",
    "claim_job",
    "delete_job",
    "hold_all_job",
    "hold_job",
    "merge_counters_job",
    "next_due",
    "purge_candidates",
    "purge_job",
    "queue_summary",
    "read_attempts",
    "recent_failures",
    "record_job",
    "record_together",
    "release_job",
    "renew_job",
    "retry_job",
]

# The recipients_pending index's WHERE clause, as in schema.sql.
PENDING = "status IN ('queued', 'deferred')"
CLAIMABLE = f"{PENDING} AND NOT held"
_LEASE_ENDED = "(claimed_until IS NULL OR claimed_until <= %(now)s)"
DUE = f"{CLAIMABLE} AND next_attempt_at <= %(now)s AND {_LEASE_ENDED}"
_FETCH = 256  # due rows read (and locked) per step while picking messages to claim
_cursor_names = itertools.count()

_ATTEMPT_COLUMNS = ", ".join(ATTEMPT_FIELDS)
# Outcomes of many messages in one statement per table (arrays; see ``arrays``): a
# batch's outcomes are one round trip, and one run of the attempts' counter trigger.
# outcome_rows' recipient columns, then ATTEMPT_FIELDS' and the events'.
_OUTCOME_TYPES = (
    ("status", TEXT), ("next_attempt_at", FLOAT), ("last_reply", TEXT),
    ("delay_warned", "boolean"), ("tried", "integer"), ("message_id", TEXT), ("address", TEXT),
)  # fmt: skip
_ATTEMPT_KINDS = (
    TEXT, TEXT, FLOAT, TEXT, TEXT, "integer", TEXT, TEXT, TEXT, TEXT, "integer", TEXT, TEXT,
    FLOAT, TEXT, TEXT,
)  # fmt: skip
# zip(strict): a column added to ATTEMPT_FIELDS without its type here fails at import.
_ATTEMPT_TYPES = tuple(zip(ATTEMPT_FIELDS, _ATTEMPT_KINDS, strict=True))
# A late outcome never reopens a final recipient (another node may have settled it
# after this one's lease ran out).
_UPDATE_RECIPIENTS = (
    "UPDATE recipients r SET status = u.status, next_attempt_at = u.next_attempt_at,"
    " last_reply = u.last_reply, delay_warned = r.delay_warned OR u.delay_warned,"
    f" attempts = r.attempts + u.tried, claimed_until = NULL FROM {unnest('u', _OUTCOME_TYPES)}"
    " WHERE r.message_id = u.message_id AND r.address = u.address"
    " AND r.status IN ('queued', 'deferred')"
)
# In order: an attempt's id breaks ties of its time.
_INSERT_ATTEMPTS = (
    f"INSERT INTO attempts ({_ATTEMPT_COLUMNS}) SELECT {names(_ATTEMPT_TYPES, 'a.')}"
    f" FROM {unnest('a', _ATTEMPT_TYPES, ordinal=True)} ORDER BY a.ordinal"
)
_INSERT_EVENTS = (
    f"INSERT INTO events ({names(EVENT_COLUMNS)}, fanned) SELECT {names(EVENT_COLUMNS, 'e.')}, 0"
    f" FROM {unnest('e', EVENT_COLUMNS, ordinal=True)} ORDER BY e.ordinal"
    " ON CONFLICT (id) DO NOTHING"
)
# The picked messages' other due recipients, those no other node is claiming now.
_LEASE = (
    "UPDATE recipients r SET claimed_until = %(until)s FROM ("
    f"SELECT message_id, position FROM recipients WHERE message_id = ANY(%(ids)s) AND {DUE}"
    " FOR UPDATE SKIP LOCKED) d"
    " WHERE r.message_id = d.message_id AND r.position = d.position"
    " RETURNING r.message_id, r.position"
)

Job = Callable[[Conn], Any]


# -- claims ---------------------------------------------------------------------------------
def claim_job(now: float, limit: int, lease_until: float) -> Callable[[Conn], list[Claim]]:
    def claim(conn: Conn) -> list[Claim]:
        picked = _pick_due_messages(conn, now, limit)
        if not picked:
            return []
        leased: dict[str, set[int]] = {}
        rows = conn.execute(_LEASE, {"until": lease_until, "ids": picked, "now": now})
        for message_id, position in rows.fetchall():
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


def _inline_bodies(conn: Conn, ids: Sequence[str]) -> dict[str, bytes]:
    if not ids:
        return {}
    rows = conn.execute(
        "SELECT id, data FROM message_bodies WHERE id = ANY(%s) AND data IS NOT NULL", (ids,)
    )
    return {row[0]: bytes(row[1]) for row in rows}


def _pick_due_messages(conn: Conn, now: float, limit: int) -> list[str]:
    """Up to ``limit`` message ids in the order of their earliest due recipient, each
    with at least one due recipient locked by this transaction.

    A server-side cursor walks the due index and locks rows only as it reads them, and
    stops as soon as it has enough: the cost follows ``limit``, not the backlog."""
    picked: dict[str, None] = {}
    sql = (
        f"SELECT message_id FROM recipients WHERE {DUE}"
        " ORDER BY next_attempt_at FOR UPDATE SKIP LOCKED"
    )
    with conn.cursor(name=f"claim{next(_cursor_names)}") as cursor:
        cursor.itersize = _FETCH
        cursor.execute(sql, {"now": now})
        while len(picked) < limit and (rows := cursor.fetchmany(_FETCH)):
            for (message_id,) in rows:
                picked[message_id] = None
                if len(picked) == limit:
                    break
    return list(picked)


def next_due(conn: Conn) -> float | None:
    """When the next claim can find something: the earliest due time of an unleased
    pending recipient, or the end of a lease (a crashed claimer's recipients)."""
    row = conn.execute(
        f"SELECT (SELECT min(next_attempt_at) FROM recipients WHERE {CLAIMABLE}"
        " AND claimed_until IS NULL),"
        " (SELECT min(greatest(next_attempt_at, claimed_until)) FROM recipients"
        f" WHERE claimed_until IS NOT NULL AND {CLAIMABLE})"
    ).fetchone()
    assert row is not None
    times = [t for t in row if t is not None]
    return min(times) if times else None


# -- outcomes and leases ------------------------------------------------------------------
class Record:
    """The writer job that records one attempt's outcomes; in a batch, with its
    neighbours (``record_together``). The rows are built here, off the writer."""

    __slots__ = ("attempts", "events", "message_id", "updates")

    def __init__(
        self,
        message_id: str,
        updates: Sequence[RecipientUpdate],
        attempts: Sequence[Attempt],
        events: Sequence[MailEvent],
    ) -> None:
        self.message_id = message_id
        self.updates, self.attempts = outcome_rows(message_id, updates, attempts)
        self.events = [outbox.event_params(event) for event in events]

    def __call__(self, conn: Conn) -> None:
        record_together(conn, [self])


def record_job(
    message_id: str,
    updates: Sequence[RecipientUpdate],
    attempts: Sequence[Attempt],
    events: Sequence[MailEvent],
) -> Record:
    return Record(message_id, updates, attempts, events)


def record_together(conn: Conn, jobs: list[Callable[[Conn], None]]) -> list[None]:
    """The GroupCommitter's merge of ``Record`` jobs: two round trips for the batch, the
    messages' check, then every table's rows in one pipelined statement each."""
    records = [job for job in jobs if isinstance(job, Record)]
    if len(records) != len(jobs):
        raise TypeError("record_together merges Record jobs only")
    # FOR SHARE: a delete by another node waits for this transaction, not the reverse. A
    # message deleted while it was being tried has nothing left to record against.
    found = conn.execute(
        "SELECT id FROM messages WHERE id = ANY(%s) FOR SHARE",
        ([record.message_id for record in records],),
    )
    live = {row[0] for row in found.fetchall()}
    records = [record for record in records if record.message_id in live]
    updates = [row for record in records for row in record.updates]
    attempts = [row for record in records for row in record.attempts]
    events = [row for record in records for row in record.events]
    with conn.pipeline():
        for sql, rows, columns in (
            (_UPDATE_RECIPIENTS, updates, _OUTCOME_TYPES),
            (_INSERT_ATTEMPTS, attempts, _ATTEMPT_TYPES),
            (_INSERT_EVENTS, events, EVENT_COLUMNS),
        ):
            if rows:
                conn.execute(sql, columns_of(rows, columns))
    return [None] * len(jobs)


def release_job(message_id: str, addresses: Collection[str]) -> Job:
    def release(conn: Conn) -> None:
        conn.execute(
            "UPDATE recipients SET claimed_until = NULL WHERE message_id = %s"
            " AND address = ANY(%s) AND claimed_until IS NOT NULL",
            (message_id, list(addresses)),
        )

    return release


def renew_job(
    leases: Mapping[str, Collection[str]], now: float, until: float
) -> Callable[[Conn], int]:
    """Move the live leases of these recipients (message id -> addresses) to ``until``.
    A lease that has already ended is not revived: another claimer may hold it now."""
    rows = [(until, message_id, list(addresses), now) for message_id, addresses in leases.items()]

    def renew(conn: Conn) -> int:
        renewed = 0
        for params in rows:
            renewed += conn.execute(
                "UPDATE recipients SET claimed_until = %s WHERE message_id = %s"
                f" AND address = ANY(%s) AND claimed_until > %s AND {PENDING}",
                params,
            ).rowcount
        return renewed

    return renew


def hold_job(message_id: str, held: bool) -> Callable[[Conn], bool]:
    def hold(conn: Conn) -> bool:
        found = conn.execute("UPDATE messages SET held = %s WHERE id = %s", (held, message_id))
        if found.rowcount == 0:
            return False
        conn.execute("UPDATE recipients SET held = %s WHERE message_id = %s", (held, message_id))
        if not held:
            conn.execute(NOTIFY_QUEUE)
        return True

    return hold


def hold_all_job(held: bool) -> Callable[[Conn], int]:
    """Hold every message with a pending recipient (``held``), or release every held
    message; the number of messages changed. Messages queued later are not held."""
    if held:
        select = f"SELECT DISTINCT message_id FROM recipients WHERE {PENDING} AND NOT held"
    else:
        select = "SELECT id FROM messages WHERE held"

    def hold_all(conn: Conn) -> int:
        ids = [row[0] for row in conn.execute(select)]
        if not ids:
            return 0
        conn.execute("UPDATE recipients SET held = %s WHERE message_id = ANY(%s)", (held, ids))
        if not held:
            conn.execute(NOTIFY_QUEUE)
        return conn.execute(
            "UPDATE messages SET held = %s WHERE id = ANY(%s)", (held, ids)
        ).rowcount

    return hold_all


def retry_job(message_id: str | None, now: float) -> Callable[[Conn], int]:
    """Pending, unheld, unleased recipients become due at ``now`` (those due earlier keep
    their place in line); the count is what a claim at ``now`` would find."""
    where = f"{CLAIMABLE} AND {_LEASE_ENDED}"
    params: dict[str, Any] = {"now": now}
    if message_id is not None:
        where += " AND message_id = %(id)s"
        params["id"] = message_id
    sql = (
        "UPDATE recipients SET next_attempt_at = least(coalesce(next_attempt_at, %(now)s),"
        f" %(now)s) WHERE {where}"
    )

    def retry(conn: Conn) -> int:
        made_due = conn.execute(sql, params).rowcount
        if made_due:
            conn.execute(NOTIFY_QUEUE)
        return made_due

    return retry


# -- removal ------------------------------------------------------------------------------
def delete_job(message_id: str) -> Callable[[Conn], bool]:
    """Recipients, body, attempts, events and meta go with the message (ON DELETE CASCADE)."""

    def delete(conn: Conn) -> bool:
        return conn.execute("DELETE FROM messages WHERE id = %s", (message_id,)).rowcount > 0

    return delete


_PURGEABLE = (
    "m.received_at < %s AND NOT EXISTS"
    f" (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.{PENDING})"
)


_WITH_BODY = f"{_PURGEABLE} AND {HAS_BODY}"


def purge_candidates(before: float, conn: Conn, *, bodies: bool = False) -> list[str]:
    """Finished messages received before ``before`` (read on a reader: no locks);
    ``bodies``: those of them whose body is still there."""
    sql = f"SELECT m.id FROM messages m WHERE {_WITH_BODY if bodies else _PURGEABLE} ORDER BY m.id"
    return [row[0] for row in conn.execute(sql, (before,))]


def purge_job(
    before: float, candidates: Sequence[str], *, bodies: bool = False
) -> Callable[[Conn], int]:
    """Remove those candidates that still qualify, checked again in the transaction: the
    whole message, or (``bodies``) its body only, keeping the log."""
    if bodies:
        sql = (
            "DELETE FROM message_bodies WHERE id IN (SELECT m.id FROM messages m"
            f" WHERE m.id = ANY(%s) AND {_PURGEABLE})"
        )
    else:
        sql = f"DELETE FROM messages m WHERE m.id = ANY(%s) AND {_PURGEABLE}"

    def purge(conn: Conn) -> int:
        return conn.execute(sql, (list(candidates), before)).rowcount

    return purge


# -- the timeline ---------------------------------------------------------------------------
def attempts_of(message_id: str, conn: Conn) -> list[Attempt]:
    return read_attempts(conn, "WHERE message_id = %s ORDER BY at, id", (message_id,))


def read_attempts(conn: Conn, where: str, params: Sequence[object]) -> list[Attempt]:
    """Attempt rows chosen by ``where`` (the rest of the SELECT after its FROM)."""
    sql = f"SELECT {_ATTEMPT_COLUMNS} FROM attempts {where}"
    return [
        Attempt(**dict(zip(ATTEMPT_FIELDS, row, strict=True))) for row in conn.execute(sql, params)
    ]


def queue_summary(conn: Conn) -> QueueSummary:
    return totals.queue_summary(conn, "%s")


# Each writing session counts into rows of its own (shard = its backend pid, see
# schema.sql), and a node's sessions come and go, so rows pile up; these fold every
# shard into shard 0 (no backend has pid 0). SKIP LOCKED: a row some session's open
# transaction is counting into is left alone (its count is not final) for the next
# merge, and two nodes merging at once split the rows instead of waiting; an upsert by
# a session after its row was folded makes a new row.
def _merge(table: str, key: str, count: str) -> str:
    return (
        f"WITH folded AS (DELETE FROM {table} WHERE ctid IN ("
        f"SELECT ctid FROM {table} WHERE shard <> 0 FOR UPDATE SKIP LOCKED)"
        f" RETURNING {key}, {count}), merged AS ("
        f"INSERT INTO {table} AS t ({key}, shard, {count})"
        f" SELECT {key}, 0, sum({count}) FROM folded GROUP BY {key}"
        f" ON CONFLICT ({key}, shard) DO UPDATE SET {count} = t.{count} + EXCLUDED.{count})"
        " SELECT count(*) FROM folded"
    )


_MERGE_COUNTERS = (
    _merge("queue_totals", "status, held", "recipients"),
    _merge("attempt_rollups", "period, slot, mailer, sender_domain, disposition", "count"),
)


def merge_counters_job(conn: Conn) -> int:
    """Fold the counters' shards (``QueueStore.merge_counters``); the rows folded away."""
    folded = 0
    for sql in _MERGE_COUNTERS:
        row = conn.execute(sql).fetchone()
        assert row is not None
        folded += int(row[0])
    return folded


def recent_failures(limit: int, conn: Conn) -> list[Attempt]:
    """Over the attempts_failed index, whose WHERE clause this repeats."""
    where = "WHERE disposition <> 'delivered' ORDER BY at DESC, id DESC LIMIT %s"
    return read_attempts(conn, where, (limit,))
