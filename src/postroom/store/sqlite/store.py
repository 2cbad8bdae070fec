"""SqliteStore: the embedded engine.

One writer thread owns the only writing connection and commits through a
``GroupCommitter``; reads run on a small pool of reader threads with their own
connections, so a long write never blocks a read. WAL mode with ``synchronous=FULL``:
a commit is durable when it returns, and readers see it at once. Other processes
(the CLI) may open the same file; ``busy_timeout`` makes writers queue for the lock.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import importlib.resources
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from postroom.errors import StoreError, StoreFull, StoreUnavailable
from postroom.mail.envelope import Notify
from postroom.store.groupcommit import DEFAULT_MAX_BYTES, DEFAULT_MAX_JOBS, GroupCommitter
from postroom.store.models import (
    NewMessage,
    RecipientState,
    RecipientStatus,
    StoredMessage,
    UserRecord,
)

__all__ = ["SCHEMA_VERSION", "SqliteStore"]

R = TypeVar("R")

SCHEMA_VERSION = 1
_SQLITE_FULL = 13  # primary result code; extended codes keep it in the low byte
_WAL_SIZE_LIMIT = 64 << 20  # shrink the WAL again after a big body

_INSERT_MESSAGE = (
    "INSERT INTO messages (id, sender, ret, envid, body_type, smtputf8, size, received_at,"
    " source_kind, principal, client_ip, client_port, helo, reverse_dns, protocol, tls,"
    " listener) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_RECIPIENT = (
    "INSERT INTO recipients (message_id, position, address, notify, orcpt, status, attempts,"
    " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?)"
)
_INSERT_BODY = "INSERT INTO message_bodies (id, data) VALUES (?, ?)"
_INSERT_ZEROBLOB = "INSERT INTO message_bodies (id, data) VALUES (?, zeroblob(?))"
# The columns are named as StoredMessage's fields.
_MESSAGE_FIELDS = (
    "id", "sender", "ret", "envid", "body_type", "smtputf8", "size", "received_at",
    "source_kind", "principal", "client_ip", "client_port", "helo", "reverse_dns", "protocol",
    "tls", "listener", "held",
)  # fmt: skip
_MESSAGE_COLUMNS = ", ".join(_MESSAGE_FIELDS)
_RECIPIENT_COLUMNS = (
    "message_id, address, status, notify, orcpt, attempts, next_attempt_at, last_reply"
)
_USER_COLUMNS = "address, password_hash, sender_domains, created_at"


class SqliteStore:
    """The ``Store`` on one SQLite file. ``await start()`` before use, ``aclose()`` after.

    ``max_bytes`` caps the database size: an enqueue that would grow it further fails
    with ``StoreFull``, as on a full disk.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = 5.0,
        readers: int = 2,
        max_bytes: int | None = None,
        max_batch_jobs: int = DEFAULT_MAX_JOBS,
        max_batch_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self.committer: GroupCommitter[sqlite3.Connection] = GroupCommitter(
            _Writer(self.path, busy_timeout, max_bytes),
            max_jobs=max_batch_jobs,
            max_bytes=max_batch_bytes,
        )
        self._closed = False
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._readers = ThreadPoolExecutor(
            readers, thread_name_prefix="postroom-reader", initializer=self._open_reader
        )

    # -- life cycle -------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self.committer.start()
        except sqlite3.Error as exc:
            raise _store_error(exc) from exc

    async def aclose(self) -> None:
        self._closed = True
        await self.committer.aclose()
        await asyncio.to_thread(self._readers.shutdown)
        with self._reader_lock:
            conns, self._reader_conns = self._reader_conns, []
        for conn in conns:
            conn.close()

    def _open_reader(self) -> None:
        conn = _connect(self.path, self._busy_timeout)
        conn.execute("PRAGMA query_only=ON")
        self._local.conn = conn
        with self._reader_lock:
            self._reader_conns.append(conn)

    def _in_reader(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        conn: sqlite3.Connection = self._local.conn
        return fn(conn)

    async def _read(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._readers, self._in_reader, fn)
        except sqlite3.Error as exc:
            raise _store_error(exc) from exc

    async def _write(self, job: Callable[[sqlite3.Connection], R], weight: int = 0) -> R:
        try:
            return await self.committer.submit(job, weight)
        except (sqlite3.Error, OSError) as exc:  # OSError: reading the spool file
            raise _store_error(exc) from exc

    # -- the queue --------------------------------------------------------------------
    async def enqueue(self, message: NewMessage) -> None:
        env, src, mid, now = message.envelope, message.source, message.id, message.received_at
        size = message.size
        row = (
            mid,
            str(env.sender) if env.sender is not None else "",
            env.dsn.ret,
            env.dsn.envid,
            env.body,
            env.smtputf8,
            size,
            now,
            src.kind,
            src.principal,
            src.client_ip,
            src.client_port,
            src.helo,
            src.reverse_dns,
            src.protocol,
            src.tls,
            src.listener,
        )
        queued = RecipientStatus.QUEUED.value
        recipients = [
            (mid, position, str(rcpt.address), _notify_text(rcpt.notify), rcpt.orcpt, queued, now)
            for position, rcpt in enumerate(env.recipients)
        ]
        await self._write(functools.partial(_insert_message, message, row, recipients), size)

    async def message(self, message_id: str) -> StoredMessage | None:
        found = await self._read(functools.partial(_select_messages, "=", message_id, 1))
        return found[0] if found else None

    async def messages(self, *, limit: int = 100, after: str | None = None) -> list[StoredMessage]:
        if limit <= 0:
            return []
        return await self._read(functools.partial(_select_messages, ">", after or "", limit))

    async def read_body(self, message_id: str) -> bytes | None:
        def select(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT data FROM message_bodies WHERE id = ?", (message_id,)
            ).fetchone()
            return None if row is None else bytes(row[0])

        return await self._read(select)

    async def count_messages(self) -> int:
        return await self._read(lambda conn: _scalar(conn, "SELECT count(*) FROM messages", ()))

    # -- the directory ----------------------------------------------------------------
    async def add_domain(self, name: str, now: float) -> bool:
        sql = "INSERT OR IGNORE INTO domains (name, created_at) VALUES (?, ?)"
        return await self._write(functools.partial(_changed, sql, (name, now)))

    async def remove_domain(self, name: str) -> bool:
        sql = "DELETE FROM domains WHERE name = ?"
        return await self._write(functools.partial(_changed, sql, (name,)))

    async def domains(self) -> list[str]:
        def select(conn: sqlite3.Connection) -> list[str]:
            return [row[0] for row in conn.execute("SELECT name FROM domains ORDER BY name")]

        return await self._read(select)

    async def is_local_domain(self, name: str) -> bool:
        sql = "SELECT count(*) FROM domains WHERE name = ?"
        return bool(await self._read(lambda conn: _scalar(conn, sql, (name,))))

    async def add_user(self, user: UserRecord) -> bool:
        sql = f"INSERT OR IGNORE INTO users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?)"
        params = (
            user.address,
            user.password_hash,
            ",".join(user.sender_domains),
            user.created_at,
        )
        return await self._write(functools.partial(_changed, sql, params))

    async def user(self, address: str) -> UserRecord | None:
        sql = f"SELECT {_USER_COLUMNS} FROM users WHERE address = ?"
        found = await self._read(lambda conn: conn.execute(sql, (address,)).fetchall())
        return _user(found[0]) if found else None

    async def users(self) -> list[UserRecord]:
        sql = f"SELECT {_USER_COLUMNS} FROM users ORDER BY address"
        return [_user(row) for row in await self._read(lambda conn: conn.execute(sql).fetchall())]

    async def set_password(self, address: str, password_hash: str) -> bool:
        sql = "UPDATE users SET password_hash = ? WHERE address = ?"
        return await self._write(functools.partial(_changed, sql, (password_hash, address)))

    async def remove_user(self, address: str) -> bool:
        sql = "DELETE FROM users WHERE address = ?"
        return await self._write(functools.partial(_changed, sql, (address,)))


class _Writer:
    """The writing connection's Transactor; every method runs on the writer thread."""

    def __init__(self, path: Path, busy_timeout: float, max_bytes: int | None) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._max_bytes = max_bytes

    def connect(self) -> sqlite3.Connection:
        conn = _connect(self._path, self._busy_timeout)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreUnavailable(f"{self._path}: cannot use WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
            _migrate(conn)
            if self._max_bytes is not None:
                page_size = conn.execute("PRAGMA page_size").fetchone()[0]
                conn.execute(f"PRAGMA max_page_count={max(1, self._max_bytes // page_size)}")
        except BaseException:
            conn.close()
            raise
        return conn

    def begin(self, conn: sqlite3.Connection) -> None:
        # IMMEDIATE: take the write lock now (waiting up to busy_timeout for the CLI)
        # rather than fail on the first write with a lock upgrade that cannot wait.
        conn.execute("BEGIN IMMEDIATE")

    def commit(self, conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")

    def rollback(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def close(self, conn: sqlite3.Connection) -> None:
        conn.close()


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    return sqlite3.connect(
        path,
        timeout=busy_timeout,
        isolation_level=None,  # we issue BEGIN/COMMIT ourselves
        check_same_thread=False,  # aclose closes readers from its thread
        cached_statements=64,
    )


# -- writer jobs (run on the writer thread inside a transaction) ------------------------
def _insert_message(
    message: NewMessage,
    row: tuple[Any, ...],
    recipients: list[tuple[Any, ...]],
    conn: sqlite3.Connection,
) -> None:
    conn.execute(_INSERT_MESSAGE, row)
    conn.executemany(_INSERT_RECIPIENT, recipients)
    body = message.body
    if body.in_memory:
        # A body under the spool threshold is in memory already: one bind beats a blob.
        conn.execute(_INSERT_BODY, (message.id, message.header + body.getvalue()))
        return
    # A spooled body is streamed into a zero-filled blob in bounded chunks, so a
    # 25 MiB message is never in memory whole, and it commits with its envelope.
    rowid = conn.execute(_INSERT_ZEROBLOB, (message.id, message.size)).lastrowid
    assert rowid is not None
    with conn.blobopen("message_bodies", "data", rowid) as blob:
        blob.write(message.header)
        for chunk in body.iter_chunks():
            blob.write(chunk)
        if blob.tell() != message.size:
            raise StoreUnavailable("the spooled body is shorter than its size")


def _changed(sql: str, params: tuple[Any, ...], conn: sqlite3.Connection) -> bool:
    return conn.execute(sql, params).rowcount > 0


# -- reads (run on a reader thread) -------------------------------------------------------
def _scalar(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> Any:
    return conn.execute(sql, params).fetchone()[0]


def _select_messages(
    operator: str, key: str, limit: int, conn: sqlite3.Connection
) -> list[StoredMessage]:
    """Messages whose id is ``operator key`` ("=" or ">"), in id order, with recipients."""
    conn.execute("BEGIN")  # messages and recipients from one snapshot
    try:
        rows = conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id {operator} ? ORDER BY id LIMIT ?",
            (key, limit),
        ).fetchall()
        if not rows:
            return []
        recipients = conn.execute(
            f"SELECT {_RECIPIENT_COLUMNS} FROM recipients"
            " WHERE message_id >= ? AND message_id <= ? ORDER BY message_id, position",
            (rows[0][0], rows[-1][0]),
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    by_message: dict[str, list[RecipientState]] = {}
    for r in recipients:
        by_message.setdefault(r[0], []).append(
            RecipientState(r[1], RecipientStatus(r[2]), r[3], r[4], r[5], r[6], r[7])
        )
    return [_stored(row, tuple(by_message.get(row[0], ()))) for row in rows]


def _stored(row: tuple[Any, ...], recipients: tuple[RecipientState, ...]) -> StoredMessage:
    fields = dict(zip(_MESSAGE_FIELDS, row, strict=True))
    fields["smtputf8"] = bool(fields["smtputf8"])
    fields["held"] = bool(fields["held"])
    return StoredMessage(recipients=recipients, **fields)


def _user(row: tuple[Any, ...]) -> UserRecord:
    address, password_hash, domains, created_at = row
    return UserRecord(address, password_hash, tuple(filter(None, domains.split(","))), created_at)


# -- schema and errors ---------------------------------------------------------------------
@functools.cache
def _schema() -> str:
    return (
        importlib.resources.files("postroom.store.sqlite").joinpath("schema.sql").read_text("utf-8")
    )


def _migrate(conn: sqlite3.Connection) -> None:
    """Create what is missing, in one transaction; refuse a newer schema."""
    try:
        # executescript commits a pending transaction first, so the script brings its own
        conn.executescript(f"BEGIN IMMEDIATE;\n{_schema()}\nCOMMIT;")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    version = _scalar(conn, "SELECT max(version) FROM schema_version", ())
    if version != SCHEMA_VERSION:
        raise StoreError(f"database schema version {version} is not {SCHEMA_VERSION}")


_NOTIFY_ORDER = tuple(Notify)


def _notify_text(notify: frozenset[Notify] | None) -> str | None:
    if notify is None:
        return None
    return ",".join(n.value for n in _NOTIFY_ORDER if n in notify)


def _store_error(exc: sqlite3.Error | OSError) -> StoreError:
    if isinstance(exc, OSError):
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    else:
        code = getattr(exc, "sqlite_errorcode", 0)
        full = code & 0xFF == _SQLITE_FULL or "database or disk is full" in str(exc)
    if full:
        return StoreFull(f"storage is full: {exc}")
    return StoreUnavailable(f"storage failed: {exc}")
