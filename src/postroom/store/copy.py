"""Copying an SQLite store into an empty PostgreSQL database (``postroom db copy``).

The source is read in one read transaction (a consistent snapshot; nothing is written
to it) and streamed row by row into PostgreSQL's COPY, so memory holds one row at a time
whatever the size of the store (a body up to ``inline_body_max`` is read whole; a larger
one becomes a large object, read and written a chunk at a time, as the store writes it).
All rows go in one PostgreSQL transaction: a copy that fails leaves the target empty,
large objects included.

The copy keeps the source's instance id: the data directory's ``instance-id`` file
stays right for the copy, and the nodes' new data directories take the same id.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from postroom.errors import StoreError
from postroom.store.models import DEFAULT_INLINE_BODY_MAX
from postroom.store.open import shown_url
from postroom.store.postgres import queue as pg_queue
from postroom.store.postgres import schema as pg_schema
from postroom.store.postgres.connection import connection
from postroom.store.sqlite import schema as sqlite_schema

__all__ = ["TABLES", "TableCount", "copy_store", "table_counts"]


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    order: str  # the source's order: rows referenced come first
    booleans: frozenset[str] = frozenset()  # SQLite 0/1 to PostgreSQL boolean
    identity: bool = False  # the first column is an identity whose sequence must follow


def _table(
    name: str, columns: str, order: str, booleans: str = "", identity: bool = False
) -> Table:
    return Table(name, tuple(columns.split()), order, frozenset(booleans.split()), identity)


_BODIES = "message_bodies"  # copied by _copy_bodies: large ones become large objects

# In an order that satisfies the foreign keys.
TABLES: tuple[Table, ...] = (
    _table(
        "messages",
        "id sender ret envid body_type smtputf8 size received_at source_kind principal"
        " client_ip client_port helo reverse_dns protocol tls listener held dsn_of",
        "id",
        "smtputf8 held",
    ),
    _table("message_bodies", "id data", "rowid"),
    _table(
        "recipients",
        "message_id position address notify orcpt status attempts next_attempt_at"
        " last_reply claimed_until delay_warned held",
        "message_id, position",
        "delay_warned held",
    ),
    _table(
        "attempts",
        "id message_id recipient at mailer disposition code enhanced text host ip port tls"
        " provider_id duration route route_reason",
        "id",
        identity=True,
    ),
    _table(
        "provider_events",
        "id message_id attempt_id mailer provider_id recipient status kind at detail received_at",
        "id",
        identity=True,
    ),
    _table("message_meta", "id message_id subject tags metadata", "id"),
    _table("domains", "name created_at", "name"),
    _table(
        "users",
        "address password_hash sender_domains created_at any_sender",
        "address",
        "any_sender",
    ),
    _table(
        "api_keys",
        "name key_id secret_hash sender_domains created_at scopes any_sender",
        "name",
        "any_sender",
    ),
    _table("idempotency", "key_name key request_hash status body created_at", "key_name, key"),
    _table(
        "events",
        "seq id type at queue_id recipient mailer reply reason origin details fanned",
        "seq",
        identity=True,
    ),
    _table(
        "webhook_deliveries",
        "webhook seq queue_id state attempts created_at next_at claimed_until last_at"
        " last_status last_error",
        "seq, webhook",
    ),
    _table("suppressions", "address scope reason source created_at detail", "address, scope"),
)


@dataclass(frozen=True)
class TableCount:
    table: str
    source: int
    target: int

    @property
    def matches(self) -> bool:
        return self.source == self.target


# (table, rows copied so far in it, rows it has): called as rows go by.
Progress = Callable[[str, int, int], None]


def copy_store(
    source: Path,
    target: str,
    progress: Progress | None = None,
    *,
    inline_body_max: int = DEFAULT_INLINE_BODY_MAX,
) -> None:
    """Copy every row of the SQLite store at ``source`` into the PostgreSQL database
    ``target``, which must hold no store (StoreError, one line, otherwise); bodies above
    ``inline_body_max`` bytes become large objects, as the store keeps them."""
    with _reader(source) as src, connection(target) as dst:
        found = sqlite_schema.schema_version(src)
        if found != sqlite_schema.SCHEMA_VERSION:
            raise StoreError(
                f"the store {source} has schema version {found}, this postroom copies"
                f" version {sqlite_schema.SCHEMA_VERSION}: run `postroom db migrate` first"
            )
        pg_schema.migrate(dst)
        _refuse_a_used_target(dst, target)
        try:
            for table in TABLES:
                if table.name == _BODIES:
                    _copy_bodies(src, dst, inline_body_max, progress)
                else:
                    _copy_table(src, dst, table, progress)
            (instance,) = src.execute("SELECT id FROM instance").fetchone()
            dst.execute("UPDATE instance SET id = %s", (instance,))
            dst.commit()
        except BaseException:
            dst.rollback()
            raise


def table_counts(source: Path, target: str) -> list[TableCount]:
    """Rows per table in the source and in the target, in ``TABLES`` order."""
    with _reader(source) as src, connection(target) as dst:
        counts = []
        for table in TABLES:
            row = dst.execute(f"SELECT count(*) FROM {table.name}").fetchone()
            counts.append(TableCount(table.name, _count(src, table.name), row[0] if row else 0))
        return counts


def _refuse_a_used_target(dst: psycopg.Connection[Any], target: str) -> None:
    used = [
        table.name
        for table in TABLES
        if dst.execute(f"SELECT EXISTS (SELECT 1 FROM {table.name})").fetchone() != (False,)
    ]
    if used:
        dst.rollback()
        raise StoreError(
            f"the database {shown_url(target)} is not empty (it has {', '.join(used)}):"
            " copy into a new, empty database"
        )


def _copy_table(
    src: sqlite3.Connection, dst: psycopg.Connection[Any], table: Table, progress: Progress | None
) -> None:
    total = _count(src, table.name)
    columns = ", ".join(table.columns)
    booleans = [i for i, column in enumerate(table.columns) if column in table.booleans]
    done = 0
    if progress is not None:
        progress(table.name, done, total)
    rows = src.execute(f"SELECT {columns} FROM {table.name} ORDER BY {table.order}")
    with dst.cursor().copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(_converted(row, booleans))
            done += 1
            if progress is not None and done % 500 == 0:
                progress(table.name, done, total)
    if progress is not None:
        progress(table.name, done, total)
    if table.identity:
        # COPY writes identity columns as given; the next id must come after them.
        column = table.columns[0]
        dst.execute(
            f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column}'),"
            f" coalesce(max({column}), 0) + 1, false) FROM {table.name}"
        )


def _copy_bodies(
    src: sqlite3.Connection,
    dst: psycopg.Connection[Any],
    inline_body_max: int,
    progress: Progress | None,
) -> None:
    """The bodies up to ``inline_body_max`` through COPY, as other rows; then each larger
    one as a large object, read from SQLite a chunk at a time (incremental blob I/O)."""
    total = _count(src, _BODIES)
    done = 0
    if progress is not None:
        progress(_BODIES, done, total)
    large: list[tuple[str, int]] = []  # (message id, rowid)
    rows = src.execute(
        f"SELECT id, rowid, CASE WHEN length(data) <= ? THEN data END FROM {_BODIES}"
        " ORDER BY rowid",
        (inline_body_max,),
    )
    with dst.cursor().copy(f"COPY {_BODIES} (id, data) FROM STDIN") as copy:
        for message_id, rowid, data in rows:
            if data is None:
                large.append((message_id, rowid))
                continue
            copy.write_row((message_id, data))
            done += 1
            if progress is not None and done % 500 == 0:
                progress(_BODIES, done, total)
    for message_id, rowid in large:
        with src.blobopen(_BODIES, "data", rowid, readonly=True) as blob:
            chunks = iter(functools.partial(blob.read, pg_queue.LARGE_CHUNK), b"")
            pg_queue.write_large(dst, message_id, b"", chunks)
        done += 1
        if progress is not None:
            progress(_BODIES, done, total)
    if progress is not None:
        progress(_BODIES, done, total)


def _converted(row: Sequence[Any], booleans: Sequence[int]) -> Sequence[Any]:
    if not booleans:
        return row
    values = list(row)
    for i in booleans:
        values[i] = bool(values[i])
    return values


def _count(src: sqlite3.Connection, name: str) -> int:
    (count,) = src.execute(f"SELECT count(*) FROM {name}").fetchone()
    return int(count)


@contextmanager
def _reader(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection holding one read transaction: a snapshot of the store."""
    if not path.is_file() or path.stat().st_size == 0:
        raise StoreError(f"there is no store at {path} to copy")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("BEGIN")
        yield conn
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    finally:
        conn.close()
