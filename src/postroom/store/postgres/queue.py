"""The queue at rest: the enqueue job (writer) and message reads (reader or writer).

Read helpers take a connection and run in whatever transaction the caller holds: a
reader's is one REPEATABLE READ snapshot, the writer's jobs run inside the batch's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from postroom.errors import StoreUnavailable
from postroom.store import outbox
from postroom.store.models import DEFAULT_INLINE_BODY_MAX, NewMessage, RecipientState, StoredMessage
from postroom.store.postgres.arrays import EVENT_COLUMNS, FLOAT, TEXT, columns_of, names, unnest
from postroom.store.postgres.connection import Conn
from postroom.store.rows import (
    MESSAGE_FIELDS,
    STORED_COLUMNS,
    message_row,
    meta_row,
    recipient_rows,
    recipient_state,
    stored_message,
)

__all__ = [
    "LARGE_CHUNK",
    "NOTIFY_QUEUE",
    "QUEUE_CHANNEL",
    "Enqueue",
    "enqueue_together",
    "load_messages",
    "read_body",
    "read_heads",
    "select_messages",
    "write_large",
]

# Every node LISTENs here: a commit that adds mail or makes it due NOTIFYs, so whichever
# node is free claims it at once. PostgreSQL sends a transaction's identical
# notifications once, at its commit: one per group-commit batch.
QUEUE_CHANNEL = "postroom_queue"
NOTIFY_QUEUE = f"NOTIFY {QUEUE_CHANNEL}"

_MESSAGE_COLUMNS = STORED_COLUMNS
_RECIPIENT_COLUMNS = (
    "message_id, position, address, status, notify, orcpt, attempts, next_attempt_at,"
    " last_reply, delay_warned"
)


# -- enqueue ----------------------------------------------------------------------------
# A large object is written this much at a time (lo_put): a bound on memory, not a format.
LARGE_CHUNK = 1 << 20


# Each table's new rows (messages_row, recipient_rows, ...) as columns and their types.
_MESSAGE_KINDS = (
    TEXT, TEXT, TEXT, TEXT, TEXT, "boolean", "bigint", FLOAT, TEXT, TEXT, TEXT,
    "integer", TEXT, TEXT, TEXT, TEXT, TEXT, TEXT,
)  # fmt: skip
_MESSAGE_TYPES = tuple(zip(MESSAGE_FIELDS[:-1], _MESSAGE_KINDS, strict=True))
_NEW_RECIPIENT_TYPES = (
    ("message_id", TEXT), ("position", "integer"), ("address", TEXT), ("notify", TEXT),
    ("orcpt", TEXT), ("status", TEXT), ("next_attempt_at", FLOAT), ("last_reply", TEXT),
    ("claimed_until", FLOAT),
)  # fmt: skip
_BODY_TYPES = (("id", TEXT), ("data", "bytea"))
_META_TYPES = (("id", TEXT), ("message_id", TEXT), ("subject", TEXT), ("tags", TEXT),
               ("metadata", TEXT))  # fmt: skip
# outbox.event_params' columns, after the id of the message whose enqueue carries them.
_OWNED_EVENT_TYPES = (("owner", TEXT), *EVENT_COLUMNS)

# A whole batch's messages in one statement: each table's rows as arrays, so the text is
# the same for every batch (prepared once, planned once) and every row of a table is
# inserted by one executor run. Events keep their order (their seq is the webhooks').
# A message whose id is stored already (a batch committed before its connection was
# lost, so its result was unknown, then tried again) is not inserted again, and neither
# are its other rows: the statement returns the ids it added.
_ENQUEUE = f"""WITH new AS (
    INSERT INTO messages ({names(_MESSAGE_TYPES)})
    SELECT * FROM {unnest("m", _MESSAGE_TYPES)}
    ON CONFLICT (id) DO NOTHING RETURNING id
), added_recipients AS (
    INSERT INTO recipients ({names(_NEW_RECIPIENT_TYPES)}, attempts)
    SELECT {names(_NEW_RECIPIENT_TYPES, "r.")}, 0
    FROM {unnest("r", _NEW_RECIPIENT_TYPES)} JOIN new ON new.id = r.message_id
), added_bodies AS (
    INSERT INTO message_bodies (id, data)
    SELECT b.id, b.data FROM {unnest("b", _BODY_TYPES)} JOIN new ON new.id = b.id
), added_meta AS (
    INSERT INTO message_meta ({names(_META_TYPES)})
    SELECT {names(_META_TYPES, "t.")} FROM {unnest("t", _META_TYPES)} JOIN new ON new.id = t.id
), added_events AS (
    INSERT INTO events ({names(EVENT_COLUMNS)}, fanned)
    SELECT {names(EVENT_COLUMNS, "e.")}, 0
    FROM {unnest("e", _OWNED_EVENT_TYPES, ordinal=True)} JOIN new ON new.id = e.owner
    ORDER BY e.ordinal
    ON CONFLICT (id) DO NOTHING
)
SELECT id FROM new"""
# The ids not added: each must be this very message, stored by an earlier try.
_STORED_BEFORE = (
    "SELECT m.id FROM messages m JOIN unnest(%s::text[], %s::double precision[], %s::bigint[])"
    " AS o(id, received_at, size) ON m.id = o.id AND m.received_at = o.received_at"
    " AND m.size = o.size"
)


class Enqueue:
    """The writer job that stores one message; in a batch, with its neighbours
    (``enqueue_together``). The rows are built here, off the writer.

    The body goes in the same transaction as the message's rows, whichever its form: a
    ``bytea`` up to ``inline_body_max`` bytes, a large object above. The batch's commit
    makes both durable at once, and a batch that fails leaves neither."""

    __slots__ = ("large", "message", "recipients", "row")

    def __init__(self, message: NewMessage, inline_body_max: int = DEFAULT_INLINE_BODY_MAX) -> None:
        self.message = message
        self.row = message_row(message)
        self.recipients = recipient_rows(message)
        self.large = message.size > inline_body_max

    def __call__(self, conn: Conn) -> None:
        enqueue_together(conn, [self])


def enqueue_together(conn: Conn, jobs: list[Callable[[Conn], None]]) -> list[None]:
    """The GroupCommitter's merge of ``Enqueue`` jobs: their rows in one statement (one
    round trip with the NOTIFY), then the bodies that do not travel in it (spooled to a
    file, or large objects) a message at a time."""
    enqueues = [job for job in jobs if isinstance(job, Enqueue)]
    if len(enqueues) != len(jobs):
        raise TypeError("enqueue_together merges Enqueue jobs only")
    with conn.cursor() as cursor:
        with conn.pipeline():
            cursor.execute(_ENQUEUE, _enqueue_params(enqueues))
            conn.execute(NOTIFY_QUEUE)
        added = {row[0] for row in cursor.fetchall()}
    if len(added) < len(enqueues):
        _check_stored_before([e.message for e in enqueues if e.message.id not in added], conn)
    for job in enqueues:
        message, body = job.message, job.message.body
        if message.id not in added or (body.in_memory and not job.large):
            continue
        if job.large:
            written = write_large(conn, message.id, message.header, body.iter_chunks(LARGE_CHUNK))
        else:
            written = _copy_inline(conn, message)
        if written != message.size:
            raise StoreUnavailable("the spooled body is shorter than its size")
    return [None] * len(jobs)


def _enqueue_params(jobs: list[Enqueue]) -> list[list[Any]]:
    """The statement's arrays: each table's rows turned into one list per column."""
    messages = [job.row for job in jobs]
    recipients = [row for job in jobs for row in job.recipients]
    bodies = [
        (job.message.id, job.message.header + job.message.body.getvalue())
        for job in jobs
        if job.message.body.in_memory and not job.large
    ]
    meta = [meta_row(job.message.meta)[:5] for job in jobs if job.message.meta is not None]
    events = [
        (job.message.id, *outbox.event_params(event))
        for job in jobs
        for event in job.message.events
    ]
    params: list[list[Any]] = []
    for rows, columns in (
        (messages, _MESSAGE_TYPES),
        (recipients, _NEW_RECIPIENT_TYPES),
        (bodies, _BODY_TYPES),
        (meta, _META_TYPES),
        (events, _OWNED_EVENT_TYPES),
    ):
        params.extend(columns_of(rows, columns))
    return params


def _check_stored_before(messages: list[NewMessage], conn: Conn) -> None:
    ids = [m.id for m in messages]
    found = conn.execute(
        _STORED_BEFORE, (ids, [m.received_at for m in messages], [m.size for m in messages])
    ).fetchall()
    taken = set(ids) - {row[0] for row in found}
    if taken:
        # Queue ids carry 32 random bits a millisecond: another message with the same id
        # is all but impossible, but it must fail this one, never pass for it.
        raise StoreUnavailable(f"queue id {min(taken)} is taken by another message")


def _copy_inline(conn: Conn, message: NewMessage) -> int:
    """A spooled body streams in bounded chunks (COPY's text form of bytea: hex), so a
    25 MiB message is never in this process's memory whole."""
    written = len(message.header)
    with (
        conn.cursor() as cursor,
        cursor.copy("COPY message_bodies (id, data) FROM STDIN") as copy,
    ):
        copy.write(f"{message.id}\t\\\\x{message.header.hex()}".encode())
        for chunk in message.body.iter_chunks():
            copy.write(chunk.hex().encode())
            written += len(chunk)
        copy.write(b"\n")
    return written


def write_large(conn: Conn, message_id: str, first: bytes, rest: Iterable[bytes]) -> int:
    """A body row whose bytes (``first``, then ``rest``'s chunks) are a new large object,
    written a chunk at a time in the caller's transaction; the bytes written."""
    found = conn.execute(
        "INSERT INTO message_bodies (id, large) VALUES (%s, lo_from_bytea(0, %s)) RETURNING large",
        (message_id, first),
    ).fetchone()
    assert found is not None
    oid = found[0]
    written = len(first)
    # A round trip a chunk, not pipelined: a pipeline would buffer the whole body.
    with conn.cursor() as cursor:
        for chunk in rest:
            cursor.execute("SELECT lo_put(%s, %s, %s)", (oid, written, chunk))
            written += len(chunk)
    return written


# -- reads --------------------------------------------------------------------------------
def select_messages(
    conn: Conn,
    where: str,
    params: Sequence[Any],
    *,
    limit: int,
    newest_first: bool = False,
) -> list[StoredMessage]:
    """Messages (table alias ``m``) matching ``where``, in id order, with recipients."""
    order = "DESC" if newest_first else "ASC"
    sql = f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE {where} ORDER BY m.id {order} LIMIT %s"
    rows = conn.execute(sql, (*params, limit)).fetchall()
    return [message for message, _ in _with_recipients(conn, rows)]


def load_messages(
    conn: Conn, ids: Sequence[str]
) -> dict[str, tuple[StoredMessage, tuple[int, ...]]]:
    """Messages by id, each with its recipients' positions (RCPT order numbers)."""
    rows = conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.id = ANY(%s)", (list(ids),)
    ).fetchall()
    return {loaded[0].id: loaded for loaded in _with_recipients(conn, rows)}


def _with_recipients(
    conn: Conn, rows: list[tuple[Any, ...]]
) -> list[tuple[StoredMessage, tuple[int, ...]]]:
    if not rows:
        return []
    by_message: dict[str, list[tuple[int, RecipientState]]] = {}
    for r in conn.execute(
        f"SELECT {_RECIPIENT_COLUMNS} FROM recipients WHERE message_id = ANY(%s)"
        " ORDER BY message_id, position",
        ([row[0] for row in rows],),
    ):
        by_message.setdefault(r[0], []).append((r[1], recipient_state(r[2:])))
    loaded = []
    for row in rows:
        recipients = by_message.get(row[0], [])
        positions = tuple(position for position, _ in recipients)
        loaded.append((stored_message(row, tuple(state for _, state in recipients)), positions))
    return loaded


def read_body(message_id: str, conn: Conn) -> bytes | None:
    row = conn.execute(
        "SELECT coalesce(data, lo_get(large)) FROM message_bodies WHERE id = %s", (message_id,)
    ).fetchone()
    return None if row is None else bytes(row[0])


def read_heads(ids: Sequence[str], size: int, conn: Conn) -> dict[str, bytes]:
    """The first ``size`` bytes of each message's stored bytes (substring of EXTERNAL
    storage reads only those)."""
    sql = "SELECT id, substring(data from 1 for %s) FROM message_bodies WHERE id = ANY(%s)"
    return {row[0]: bytes(row[1]) for row in conn.execute(sql, (size, list(ids)))}
