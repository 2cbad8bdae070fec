"""Connections: the writer's Transactor, reader set-up, and errors mapped to StoreError."""

from __future__ import annotations

import errno
import sqlite3
import time
from pathlib import Path

from postroom.errors import StoreDamaged, StoreError, StoreFull, StoreUnavailable
from postroom.store.sqlite.schema import migrate

__all__ = ["Writer", "connect", "connect_reader", "store_error", "use_wal"]

_SQLITE_BUSY = 5  # primary result codes; extended codes keep them in the low byte
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26
# Waiting for another process's write lock (accept workers, the CLI): SQLite's own busy
# handler sleeps 1, 2, 5, 10 ... ms between tries, far longer than a commit holds the
# lock (one fsync, well under a millisecond), so the writer polls in short steps instead.
_FIRST_BUSY_PAUSE = 50e-6
_MAX_BUSY_PAUSE = 1e-3
_WAL_SIZE_LIMIT = 64 << 20  # shrink the WAL again after a big body


def connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    return sqlite3.connect(
        path,
        timeout=busy_timeout,
        isolation_level=None,  # we issue BEGIN/COMMIT ourselves
        check_same_thread=False,  # aclose closes readers from its thread
        cached_statements=64,
    )


def connect_reader(path: Path, busy_timeout: float) -> sqlite3.Connection:
    conn = connect(path, busy_timeout)
    conn.execute("PRAGMA query_only=ON")
    # SQLite's lower() folds ASCII only; the log's substring filters fold like Python.
    conn.create_function("unicode_lower", 1, _lower, deterministic=True)
    return conn


def use_wal(conn: sqlite3.Connection, timeout: float) -> str:
    """Switch ``conn``'s file to WAL; the mode it is in after. Two processes opening a
    new file at once both ask for the switch, which needs the file to itself: SQLite
    answers the loser "locked" at once rather than wait (a lock upgrade that could
    deadlock), whatever the busy timeout. So ask again, for up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


def _lower(text: str | None) -> str | None:
    return None if text is None else text.lower()


class Writer:
    """The writing connection's Transactor; every method runs on the writer thread."""

    def __init__(self, path: Path, busy_timeout: float, max_bytes: int | None) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._max_bytes = max_bytes

    def connect(self) -> sqlite3.Connection:
        conn = connect(self._path, self._busy_timeout)
        try:
            mode = use_wal(conn, self._busy_timeout)
            if mode != "wal":
                raise StoreUnavailable(f"{self._path}: cannot use WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
            migrate(conn)
            conn.execute("PRAGMA busy_timeout=0")  # begin() waits for the lock itself
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
        # It also makes claims safe across processes: the claim reads and leases
        # under one write lock, so two processes never lease the same recipient.
        deadline: float | None = None
        pause = _FIRST_BUSY_PAUSE
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF != _SQLITE_BUSY:
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self._busy_timeout
                elif now >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, _MAX_BUSY_PAUSE)

    def commit(self, conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")

    def rollback(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def lost(self, conn: sqlite3.Connection) -> bool:
        return False  # a file is not lost between two batches

    def close(self, conn: sqlite3.Connection) -> None:
        conn.close()


def store_error(exc: sqlite3.Error | OSError) -> StoreError:
    damaged = False
    if isinstance(exc, OSError):
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    else:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        full = code == _SQLITE_FULL or "database or disk is full" in str(exc)
        damaged = code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or "malformed" in str(exc)
    if full:
        return StoreFull(f"storage is full: {exc}")
    if damaged:
        return StoreDamaged(f"the database is damaged: {exc}")
    return StoreUnavailable(f"storage failed: {exc}")
