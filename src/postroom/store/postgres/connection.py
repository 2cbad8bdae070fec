"""Connections to PostgreSQL: the writer's (group commit) and the error mapping.

The URL is handed to libpq as it is, so libpq's own rules apply: the password from
PGPASSWORD or ``~/.pgpass`` (PGPASSFILE), TLS from ``sslmode`` and friends in the URL,
a unix socket directory as ``host``.
"""

from __future__ import annotations

import errno
import select
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pgerrors

from postroom.errors import StoreDamaged, StoreError, StoreFull, StoreUnavailable
from postroom.store.postgres.guard import DEFAULT_TIMEOUT, Guard, conninfo
from postroom.store.postgres.schema import migrate

__all__ = ["Link", "Readers", "Writer", "connect", "connection", "store_error", "usable"]

Conn = psycopg.Connection[Any]
R = TypeVar("R")


def connect(
    url: str,
    *,
    lock_timeout: float,
    autocommit: bool = False,
    guard: Guard | None = None,
    durable: bool = True,
) -> Conn:
    """A connection with postroom's session settings; ``guard`` bounds connecting and
    the settings (a failure to connect starts its pause; without one, as for a command,
    connecting is bounded by ``DEFAULT_TIMEOUT``). ``durable``: commits wait for the
    disk (``synchronous_commit``), as every commit of mail must."""
    timeout = guard.timeout if guard is not None else DEFAULT_TIMEOUT
    try:
        conn = psycopg.connect(conninfo(url, timeout), autocommit=autocommit)
    except (psycopg.OperationalError, OSError):
        if guard is not None:
            guard.failed()
        raise
    token = guard.arm(conn.fileno()) if guard is not None else None
    try:
        # 250/202 only after a durable commit, whatever the server's default says.
        conn.execute(f"SET synchronous_commit = {'on' if durable else 'off'}")
        # A lock held elsewhere (another node, an operator's LOCK) is waited for this long.
        conn.execute(f"SET lock_timeout = {max(1, round(lock_timeout * 1000))}")
        if not autocommit:
            conn.commit()
    except BaseException:
        if guard is not None and token is not None:
            guard.disarm(token)  # before the close: the descriptor may be reused after
        conn.close()
        raise
    if guard is not None and token is not None:
        guard.disarm(token)
    return conn


def usable(conn: Conn) -> bool:
    """False when ``conn`` is closed, or the server ended it while it was idle (a
    restart, ``pg_terminate_backend``, an idle timeout): these connections LISTEN to
    nothing, so an idle one has input only when the server said goodbye (its error
    message, then the end of the stream, which may not have arrived yet). One poll, no
    round trip: a connection that died unseen is made anew instead of failing a call."""
    if conn.closed:
        return False
    poll = select.poll()
    poll.register(conn.fileno(), select.POLLIN)
    return not poll.poll(0)


@contextmanager
def connection(url: str) -> Iterator[Conn]:
    """A connection of its own for a command (status, migrate, copy); psycopg's errors
    become StoreError, one line."""
    try:
        conn = connect(url, lock_timeout=30)
    except (psycopg.Error, OSError) as exc:
        raise store_error(exc) from exc
    try:
        yield conn
    except psycopg.Error as exc:
        raise store_error(exc) from exc
    finally:
        conn.close()


class Link:
    """The writer's connection, made again when the database comes back after a loss,
    and the deadline of the transaction running on it."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.token: int | None = None


class Writer:
    """The GroupCommitter's Transactor: one connection, one transaction per batch, each
    within the guard's deadline (from BEGIN to its COMMIT or ROLLBACK)."""

    def __init__(
        self, url: str, lock_timeout: float, *, upgrade: bool = True, guard: Guard | None = None
    ) -> None:
        self._url = url
        self._lock_timeout = lock_timeout
        self._upgrade = upgrade
        self._guard = guard or Guard()
        self._again = False  # the next begin runs a batch again: admitted already
        self._timed_out = False  # the last transaction's deadline ran out

    def connect(self) -> Link:
        """The first connection also creates the schema, or upgrades it when allowed."""
        conn = connect(self._url, lock_timeout=self._lock_timeout, guard=self._guard)
        try:
            migrate(conn, upgrade=self._upgrade)
        except BaseException:
            conn.close()
            raise
        return Link(conn)

    def begin(self, link: Link) -> None:
        # The transaction starts with the first statement; a connection lost since the
        # last batch is made anew here (a failure fails this batch; the next one retries).
        if self._again:
            self._again = False  # the same try: the guard's pause must not fail it
        else:
            self._guard.admit()
        if not usable(link.conn):
            link.conn.close()
            link.conn = connect(self._url, lock_timeout=self._lock_timeout, guard=self._guard)
        link.token = self._guard.arm(link.conn.fileno())

    def commit(self, link: Link) -> None:
        try:
            link.conn.commit()
        finally:
            self._disarm(link)
        self._guard.answered()

    def rollback(self, link: Link) -> None:
        try:
            if not link.conn.closed:
                link.conn.rollback()
        finally:
            self._disarm(link)

    def lost(self, link: Link) -> bool:
        # Died unseen (its goodbye still in flight when the batch began): the server
        # rolled back what it had of the batch, which runs again at once (GroupCommitter)
        # as part of the same try of the guard. Not when the watchdog ended it: then
        # the database does not answer, and the guard's pause fails what follows.
        self._again = link.conn.closed and not self._timed_out
        return self._again

    def _disarm(self, link: Link) -> None:
        if link.token is not None:
            self._timed_out = self._guard.disarm(link.token)
            link.token = None

    def close(self, link: Link) -> None:
        link.conn.close()


class Readers:
    """The reader threads' connections: one per thread, made when it first reads and
    made again after a loss. A read that needs one moment (``snapshot``) is one
    REPEATABLE READ transaction; a read of one statement is that statement alone
    (autocommit), one round trip instead of three. Every transaction on a reader's
    connection is read-only, and every read runs within the guard's deadline.

    A read never waits for a connection: while the database cannot be reached each read
    fails at once (the client gets 451 or 503, not a hang), and the first read after it
    is back connects again. (A pool would make the read wait its timeout for a
    connection it keeps trying to make in the background, and reconnect on its own
    backoff after the database is back.)"""

    def __init__(self, url: str, lock_timeout: float, guard: Guard | None = None) -> None:
        self._url = url
        self._lock_timeout = lock_timeout
        self._guard = guard or Guard()
        self._local = threading.local()
        self._made: list[Conn] = []  # every connection made, to close at the end
        self._lock = threading.Lock()

    def read(self, fn: Callable[[Conn], R], snapshot: bool = True) -> R:
        """``fn`` on this thread's connection; ``snapshot``: in one transaction (else
        ``fn`` must run one statement). A read is safe to run again: one whose connection
        the server dropped (a restart, a failover) runs once more on a new connection."""
        for again in (True, False):
            self._guard.admit()
            conn = self._connection()
            token = self._guard.arm(conn.fileno())
            try:
                if not snapshot:
                    found = fn(conn)
                else:
                    with conn.transaction():
                        found = fn(conn)
            except psycopg.OperationalError:
                if not (again and conn.broken):
                    raise
            else:
                self._guard.answered()
                return found
            finally:
                self._guard.disarm(token)
        raise AssertionError("unreachable")

    def _connection(self) -> Conn:
        conn: Conn | None = getattr(self._local, "conn", None)
        if conn is not None and usable(conn):
            return conn
        if conn is not None:
            conn.close()
        conn = connect(
            self._url, lock_timeout=self._lock_timeout, autocommit=True, guard=self._guard
        )
        conn.execute("SET default_transaction_read_only = on")
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        self._local.conn = conn
        with self._lock:
            self._made = [c for c in self._made if not c.closed]
            self._made.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection (after the reader threads have ended)."""
        with self._lock:
            made, self._made = self._made, []
        for conn in made:
            conn.close()


def store_error(exc: psycopg.Error | OSError) -> StoreError:
    full = isinstance(exc, pgerrors.DiskFull) or (
        isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    )
    if full:
        return StoreFull(f"storage is full: {exc}")
    if isinstance(exc, pgerrors.DataCorrupted | pgerrors.IndexCorrupted):
        return StoreDamaged(f"the database is damaged: {exc}")
    # libpq's messages run over several lines (and hints): a log line and a CLI error
    # are one line each.
    return StoreUnavailable(f"storage failed: {' '.join(str(exc).split())}")
