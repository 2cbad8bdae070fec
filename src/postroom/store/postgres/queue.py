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
    "enqueue_job",
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
_INSERT_MESSAGE = (
    f"INSERT INTO messages ({', '.join(MESSAGE_FIELDS[:-1])})"
    f" VALUES ({', '.join('%s' for _ in MESSAGE_FIELDS[:-1])})"
)
_INSERT_RECIPIENT = (
    "INSERT INTO recipients (message_id, position, address, notify, orcpt, status, attempts,"
    " next_attempt_at, last_reply, claimed_until)"
    " VALUES (%s, %s, %s, %s, %s, %s, 0, %s, %s, %s)"
)
_RECIPIENT_COLUMNS = (
    "message_id, position, address, status, notify, orcpt, attempts, next_attempt_at,"
    " last_reply, delay_warned"
)


# -- enqueue ----------------------------------------------------------------------------
# A large object is written this much at a time (lo_put): a bound on memory, not a format.
LARGE_CHUNK = 1 << 20


def enqueue_job(
    message: NewMessage, inline_body_max: int = DEFAULT_INLINE_BODY_MAX
) -> Callable[[Conn], None]:
    """The writer job that stores ``message``; the rows are built here, off the writer.

    The body goes in the same transaction as the message's rows, whichever its form: a
    ``bytea`` up to ``inline_body_max`` bytes, a large object above. The batch's commit
    makes both durable at once, and a batch that fails leaves neither."""
    row = message_row(message)
    recipients = recipient_rows(message)
    large = message.size > inline_body_max

    def insert(conn: Conn) -> None:
        body = message.body
        # Pipelined: the statements go out together, one round trip instead of three.
        with conn.pipeline(), conn.cursor() as cursor:
            cursor.execute(_INSERT_MESSAGE, row)
            cursor.executemany(_INSERT_RECIPIENT, recipients)
            if message.meta is not None:
                cursor.execute(outbox.POSTGRES.sql(outbox.META_INSERT), meta_row(message.meta)[:5])
            if message.events:
                cursor.executemany(
                    outbox.POSTGRES.sql(outbox.EVENT_INSERT),
                    [outbox.event_params(e) for e in message.events],
                )
            cursor.execute(NOTIFY_QUEUE)
            if body.in_memory and not large:
                cursor.execute(
                    "INSERT INTO message_bodies (id, data) VALUES (%s, %s)",
                    (message.id, message.header + body.getvalue()),
                )
        if large:
            chunks = body.iter_chunks(LARGE_CHUNK)
            written = write_large(conn, message.id, message.header, chunks)
        elif body.in_memory:
            return
        else:
            written = _copy_inline(conn, message)
        if written != message.size:
            raise StoreUnavailable("the spooled body is shorter than its size")

    return insert


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
