"""The queue at rest: the enqueue job (writer) and message reads (reader or writer).

Read helpers take a connection and run in whatever transaction the caller holds:
readers wrap them in ``snapshot`` so a message and its recipients come from one
moment; the writer's jobs already run inside the batch's transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

from postroom.errors import StoreUnavailable
from postroom.store import outbox
from postroom.store.models import NewMessage, RecipientState, StoredMessage
from postroom.store.rows import (
    STORED_COLUMNS,
    message_row,
    meta_row,
    recipient_rows,
    recipient_state,
    stored_message,
)

__all__ = [
    "EnqueueRows",
    "RowsJob",
    "enqueue_job",
    "enqueue_rows",
    "ids_param",
    "insert_together",
    "load_messages",
    "read_body",
    "read_heads",
    "rows_job",
    "select_messages",
    "snapshot",
]

R = TypeVar("R")

_INSERT_MESSAGE = (
    "INSERT INTO messages (id, sender, ret, envid, body_type, smtputf8, size, received_at,"
    " source_kind, principal, client_ip, client_port, helo, reverse_dns, protocol, tls,"
    " listener, dsn_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# The new recipient's held and delay_warned columns keep their defaults: enqueue is the
# accept path, and it writes nothing it does not have to. Its lease is set only for mail
# the accepting process delivers itself (NewMessage.leased).
_INSERT_RECIPIENT = (
    "INSERT INTO recipients (message_id, position, address, notify, orcpt, status, attempts,"
    " next_attempt_at, last_reply, claimed_until)"
    " VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?)"
)
_INSERT_BODY = "INSERT INTO message_bodies (id, data) VALUES (?, ?)"
_INSERT_ZEROBLOB = "INSERT INTO message_bodies (id, data) VALUES (?, zeroblob(?))"
_MESSAGE_COLUMNS = STORED_COLUMNS
_RECIPIENT_COLUMNS = (
    "message_id, position, address, status, notify, orcpt, attempts, next_attempt_at,"
    " last_reply, delay_warned"
)
# One parameter carries a list of ids: WHERE id IN (SELECT value FROM json_each(?)).
IN_IDS = "(SELECT value FROM json_each(?))"


def ids_param(ids: Iterable[str]) -> str:
    return json.dumps(list(ids))


def snapshot(conn: sqlite3.Connection, read: Callable[[sqlite3.Connection], R]) -> R:
    """Run ``read`` in one read transaction (a reader connection)."""
    conn.execute("BEGIN")
    try:
        return read(conn)
    finally:
        conn.execute("COMMIT")


# -- enqueue ----------------------------------------------------------------------------
class EnqueueRows(NamedTuple):
    """A new message with a body in memory as the plain values its rows hold: built by
    the accepting process, inserted by whichever process writes (an accept worker hands
    them to the primary's writer, see ``sharedwriter``)."""

    message: tuple[Any, ...]
    recipients: list[tuple[Any, ...]]
    events: list[tuple[Any, ...]]
    meta: tuple[Any, ...] | None
    data: bytes  # the stored bytes: header, then body

    @property
    def size(self) -> int:
        return len(self.data)


def enqueue_rows(message: NewMessage) -> EnqueueRows:
    """``message``'s rows; its body must be in memory (``message.body.in_memory``)."""
    return _rows(message, message.header + message.body.getvalue())


def _rows(message: NewMessage, data: bytes) -> EnqueueRows:
    meta = None if message.meta is None else meta_row(message.meta)[:5]
    events = [outbox.event_params(event) for event in message.events]
    return EnqueueRows(message_row(message), recipient_rows(message), events, meta, data)


def enqueue_job(message: NewMessage) -> RowsJob | Callable[[sqlite3.Connection], None]:
    """The writer job that stores ``message``; the rows are built here, off the writer."""
    if message.body.in_memory:
        return rows_job(enqueue_rows(message))
    # A spooled body is streamed into a zero-filled blob in bounded chunks, so a
    # 25 MiB message is never in memory whole, and it commits with its envelope.
    rows = _rows(message, b"")

    def insert(conn: sqlite3.Connection) -> None:
        _insert_rows([rows], conn)
        rowid = conn.execute(_INSERT_ZEROBLOB, (message.id, message.size)).lastrowid
        assert rowid is not None
        with conn.blobopen("message_bodies", "data", rowid) as blob:
            blob.write(message.header)
            for chunk in message.body.iter_chunks():
                blob.write(chunk)
            if blob.tell() != message.size:
                raise StoreUnavailable("the spooled body is shorter than its size")

    return insert


class RowsJob:
    """The writer job that stores a message given as its rows; ``insert_together``
    stores several such jobs as one statement per table."""

    __slots__ = ("rows",)

    def __init__(self, rows: EnqueueRows) -> None:
        self.rows = rows

    def __call__(self, conn: sqlite3.Connection) -> None:
        _insert_rows([self.rows], conn, with_bodies=True)


def rows_job(rows: EnqueueRows) -> RowsJob:
    """The writer job that stores a message given as its rows."""
    return RowsJob(rows)


def insert_together(
    conn: sqlite3.Connection, jobs: list[Callable[[sqlite3.Connection], None]]
) -> list[None]:
    """The group commit's merge of ``RowsJob``s: each table's rows of every message in
    one ``executemany`` (each statement releases and takes back the GIL, which the busy
    event loop holds most of the time), not five statements a message."""
    batch = [job.rows for job in jobs if isinstance(job, RowsJob)]
    if len(batch) != len(jobs):
        raise TypeError("insert_together merges RowsJob jobs only")
    _insert_rows(batch, conn, with_bodies=True)
    return [None] * len(jobs)


def _insert_rows(
    batch: Sequence[EnqueueRows], conn: sqlite3.Connection, *, with_bodies: bool = False
) -> None:
    """The messages' rows, one statement per table; their bodies too if ``with_bodies``
    (a spooled body is streamed into its blob by its job instead)."""
    conn.executemany(_INSERT_MESSAGE, [rows.message for rows in batch])
    conn.executemany(_INSERT_RECIPIENT, [r for rows in batch for r in rows.recipients])
    events = [event for rows in batch for event in rows.events]
    if events:
        conn.executemany(outbox.SQLITE.sql(outbox.EVENT_INSERT), events)
    metas = [rows.meta for rows in batch if rows.meta is not None]
    if metas:
        conn.executemany(outbox.META_INSERT, metas)
    if with_bodies:
        conn.executemany(_INSERT_BODY, [(rows.message[0], rows.data) for rows in batch])


# -- reads --------------------------------------------------------------------------------
def select_messages(
    conn: sqlite3.Connection,
    where: str,
    params: Sequence[Any],
    *,
    limit: int,
    newest_first: bool = False,
) -> list[StoredMessage]:
    """Messages (table alias ``m``) matching ``where``, in id order, with recipients."""
    order = "DESC" if newest_first else "ASC"
    rows = conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE {where} ORDER BY m.id {order} LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [message for message, _ in _with_recipients(conn, rows)]


def load_messages(
    conn: sqlite3.Connection, ids: Sequence[str]
) -> dict[str, tuple[StoredMessage, tuple[int, ...]]]:
    """Messages by id, each with its recipients' positions (RCPT order numbers)."""
    rows = conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.id IN {IN_IDS}", (ids_param(ids),)
    ).fetchall()
    return {loaded[0].id: loaded for loaded in _with_recipients(conn, rows)}


def _with_recipients(
    conn: sqlite3.Connection, rows: list[tuple[Any, ...]]
) -> list[tuple[StoredMessage, tuple[int, ...]]]:
    if not rows:
        return []
    by_message: dict[str, list[tuple[int, RecipientState]]] = {}
    for r in conn.execute(
        f"SELECT {_RECIPIENT_COLUMNS} FROM recipients WHERE message_id IN {IN_IDS}"
        " ORDER BY message_id, position",
        (ids_param(row[0] for row in rows),),
    ):
        by_message.setdefault(r[0], []).append((r[1], recipient_state(r[2:])))
    loaded = []
    for row in rows:
        recipients = by_message.get(row[0], [])
        positions = tuple(position for position, _ in recipients)
        loaded.append((stored_message(row, tuple(state for _, state in recipients)), positions))
    return loaded


def read_body(message_id: str, conn: sqlite3.Connection) -> bytes | None:
    row = conn.execute("SELECT data FROM message_bodies WHERE id = ?", (message_id,)).fetchone()
    return None if row is None else bytes(row[0])


def read_heads(ids: Sequence[str], size: int, conn: sqlite3.Connection) -> dict[str, bytes]:
    """The first ``size`` bytes of each message's stored bytes (substr reads no more)."""
    sql = f"SELECT id, substr(data, 1, ?) FROM message_bodies WHERE id IN {IN_IDS}"
    return {row[0]: bytes(row[1]) for row in conn.execute(sql, (size, ids_param(ids)))}
