"""The shared limits on PostgreSQL: every node counts in the same unlogged tables.

A node runs its limit calls on one connection of their own, one at a time on one
thread, each a short, pipelined transaction: an advisory lock per key (``pg_advisory_xact_lock``
on this module's lock class and the key's hash), so nodes touching one key take turns
while other keys go on, then the statements of ``store.limitops``. The tables are
UNLOGGED and the connection commits with ``synchronous_commit = off``: a commit does
not wait for a disk flush, and a crash of the database empties the counters (limits
start afresh, as after a restart of one node on SQLite). The writer's group commits
and this connection never wait for each other.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg

from postroom.errors import StoreError
from postroom.store.limitops import LimitRunner, Sql
from postroom.store.postgres.connection import Conn, connect, store_error, usable
from postroom.store.postgres.guard import Guard

__all__ = ["LimitLink"]

R = TypeVar("R")
# pg_advisory_xact_lock(int, int)'s first number for every key's lock: its own space,
# apart from the schema migration's single bigint lock.
_LOCK_CLASS = 0x6C696D  # "lim"
_MARK = re.compile(r"\?")
_ANSWERS = re.compile(r"^\s*SELECT|\bRETURNING\b")  # statements whose rows are read


class LimitLink(LimitRunner):
    """The node's connection for limit calls, made again after a loss."""

    _errors = (psycopg.Error, OSError)

    def __init__(self, url: str, *, lock_timeout: float, guard: Guard | None = None) -> None:
        super().__init__()
        self._url = url
        self._lock_timeout = lock_timeout
        self._guard = guard or Guard()
        self._conn: Conn | None = None

    def _connection(self) -> Conn:
        if self._conn is not None and not usable(self._conn):
            self._conn.close()
            self._conn = None
        if self._conn is None:
            # Counters, not mail: commits need not wait for the disk (see the module).
            self._conn = connect(
                self._url, lock_timeout=self._lock_timeout, guard=self._guard, durable=False
            )
        return self._conn

    def _run(self, keys: Sequence[str], job: Callable[[Sql], R]) -> R:
        self._guard.admit()
        conn = self._connection()
        token = self._guard.arm(conn.fileno())
        try:
            result = self._call(conn, keys, job)
        finally:
            self._guard.disarm(token)
        self._guard.answered()
        return result

    def _call(self, conn: Conn, keys: Sequence[str], job: Callable[[Sql], R]) -> R:

        def sql(statement: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
            cursor = conn.execute(_MARK.sub("%s", statement).encode(), params)
            if _ANSWERS.search(statement) is None:
                return []  # not waited for: it goes out with the next read or the commit
            return cursor.fetchall()

        try:
            # Pipelined: the locks, the writes and the commit go out with the statement
            # after them, so a call costs two round trips, not one per statement. The
            # locks still come first: the server runs a pipeline in order, and a read
            # takes its snapshot when it runs, after them.
            with conn.pipeline():
                # One order for every node, so two calls holding two keys never deadlock.
                for key in sorted(set(keys)):
                    conn.execute(
                        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, key)
                    )
                result = job(sql)
                conn.commit()
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise
        return result

    def _error(self, exc: Exception) -> StoreError:
        assert isinstance(exc, psycopg.Error | OSError)
        return store_error(exc)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
