"""The shared limits on one machine: a small SQLite file of their own beside the store.

Every process that opens the store (the primary and its accept workers, the CLI) opens
this file too, so the AUTH throttle counts across the accept workers of
``workers = N``; delivery and the API run in the primary only, where it counts the
same as memory would. The counters are not the queue: the file is never fsync'ed
(``synchronous=OFF``), a crash of the machine may lose the last counts, and the store's
own write lock is never waited for. ``path`` None keeps the counters in memory, for one
process (a mailer or a throttle built without a store).

The limits file is rebuilt, empty, when its tables do not match this postroom's: it
holds nothing that must survive an upgrade.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from postroom.errors import StoreError
from postroom.store.limitops import TABLES, LimitOps, LimitRunner, Sql
from postroom.store.sqlite.connection import store_error, use_wal

__all__ = ["LocalLimits", "limits_path"]

R = TypeVar("R")
_VERSION = 1  # user_version of the limits file; another value: rebuilt
# A read on the event loop's thread (every login's throttle check) gives up after this
# long should it ever have to wait, and goes to the limits thread instead.
_INLINE_BUSY_TIMEOUT = 0.01
_SCHEMA = """
CREATE TABLE IF NOT EXISTS limit_windows (
    key TEXT PRIMARY KEY, ends_at REAL NOT NULL, used INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS limit_buckets (
    key TEXT PRIMARY KEY, tokens REAL NOT NULL, at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS limit_hits (
    key TEXT NOT NULL, tag TEXT NOT NULL, at REAL NOT NULL, expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS limit_hits_key ON limit_hits (key, at);
CREATE INDEX IF NOT EXISTS limit_hits_expires ON limit_hits (expires);
CREATE TABLE IF NOT EXISTS limit_slots (
    key TEXT NOT NULL, holder TEXT NOT NULL, held INTEGER NOT NULL, until REAL NOT NULL,
    PRIMARY KEY (key, holder)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS limit_slots_holder ON limit_slots (holder);
"""


def limits_path(store_path: Path) -> Path:
    """The limits file of the store at ``store_path``: ``postroom.db-limits``."""
    return store_path.with_name(store_path.name + "-limits")


class LocalLimits(LimitOps, LimitRunner):
    """``LimitStore`` on a limits file (or in memory)."""

    _errors = (sqlite3.Error,)

    def __init__(self, path: Path | None, *, busy_timeout: float = 5.0) -> None:
        super().__init__()
        self.path = path
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._inline: sqlite3.Connection | None = None  # reads on the loop's thread

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            target = ":memory:" if self.path is None else self.path
            if self.path is not None:
                self.path.touch(mode=0o600, exist_ok=True)
            conn = sqlite3.connect(
                target, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
            try:
                _prepare(conn, self._busy_timeout)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _run(self, keys: Sequence[str], job: Callable[[Sql], R]) -> R:
        conn = self._connection()

        def sql(statement: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
            return conn.execute(statement, params).fetchall()

        conn.execute("BEGIN IMMEDIATE")
        try:
            result = job(sql)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def _limit_tx(self, keys: Sequence[str], job: Callable[[Sql], R]) -> R:
        return await self.run(keys, job)

    async def _limit_read(self, keys: Sequence[str], job: Callable[[Sql], R]) -> R:
        return await self.read(keys, job)

    async def read(self, keys: Sequence[str], job: Callable[[Sql], R]) -> R:
        """``job`` of one reading statement, on this thread: a WAL reader waits for no
        writer, and a hop to the limits thread costs far more than the read. The limits
        thread answers it when the file is not ready yet (or in memory) or is locked."""
        if self.path is None or self._conn is None or self._closed:
            return await self.run(keys, job)
        try:
            if self._inline is None:
                self._inline = sqlite3.connect(
                    self.path,
                    timeout=_INLINE_BUSY_TIMEOUT,
                    isolation_level=None,
                    check_same_thread=False,
                )
            conn = self._inline
            return job(lambda statement, params: conn.execute(statement, params).fetchall())
        except sqlite3.OperationalError:
            return await self.run(keys, job)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def _error(self, exc: Exception) -> StoreError:
        assert isinstance(exc, sqlite3.Error)
        return store_error(exc)

    def _close(self) -> None:
        for conn in (self._conn, self._inline):
            if conn is not None:
                conn.close()
        self._conn = self._inline = None


def _prepare(conn: sqlite3.Connection, busy_timeout: float) -> None:
    use_wal(conn, busy_timeout)
    conn.execute("PRAGMA synchronous=OFF")  # counters, not mail: never fsync'ed
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, _VERSION):
            for table in TABLES:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
