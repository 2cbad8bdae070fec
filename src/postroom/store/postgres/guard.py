"""Bounds on waiting for PostgreSQL, so a database that stops answering without closing
its connections (a frozen server, a network that drops everything) cannot hang a node.

- **A deadline per call.** A call (a batch of writes, a read, a limit call) still
  waiting ``timeout`` seconds after it began has its connection's socket shut down by a
  watchdog thread: libpq, blocked reading, sees the connection end, and the call fails
  as a lost connection at once. (The server rolls the transaction back when it runs
  again; nothing half-done is committed.) A server-side ``statement_timeout`` cannot do
  this: a frozen server enforces nothing.
- **Connecting is bounded the same** (``connect_timeout``), and TCP connections get
  keepalives and ``tcp_user_timeout`` unless the URL sets them (``conninfo``), so an
  idle connection to a vanished host is noticed too.
- **A pause after a failure** (a circuit breaker). Once a connection could not be made
  or a call ran out of time, every call fails at once for ``pause`` seconds instead of
  each waiting out its own timeout in turn; then one call tries again while the others
  keep failing at once, until it has its answer. So while the database does not answer
  a session gets ``451 4.3.0`` within a moment, and the first call that succeeds after
  it is back ends the pause.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
from collections.abc import Callable

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from postroom.errors import StoreUnavailable
from postroom.store.models import DEFAULT_DATABASE_TIMEOUT

__all__ = ["DEFAULT_TIMEOUT", "Guard", "conninfo"]

DEFAULT_TIMEOUT = DEFAULT_DATABASE_TIMEOUT  # seconds ([database] timeout)
_PAUSE = 0.5  # seconds: how long calls fail at once after the database did not answer


def conninfo(url: str, timeout: float) -> str:
    """``url`` with libpq's bounds on an unanswering peer, where the URL sets none of its
    own: ``connect_timeout`` (whole seconds, at least 2, as libpq counts), TCP keepalives
    that give up after about ``timeout`` seconds of silence, and ``tcp_user_timeout``
    (data sent but not acknowledged). libpq ignores the TCP ones on a unix socket."""
    given = conninfo_to_dict(url)
    idle = max(1, math.ceil(timeout / 2))
    defaults = {
        "connect_timeout": str(max(2, math.ceil(timeout))),
        "keepalives": "1",
        "keepalives_idle": str(idle),
        "keepalives_interval": str(max(1, math.ceil(timeout / 6))),
        "keepalives_count": "3",
        "tcp_user_timeout": str(max(1000, round(timeout * 1000))),
    }
    extra = {k: v for k, v in defaults.items() if k not in given}
    return make_conninfo(url, **extra) if extra else url


class Guard:
    """One store's deadlines (``arm``/``disarm`` around each call) and its pause after
    a failure (``admit`` before each call, ``failed``/``answered`` after)."""

    def __init__(
        self,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        pause: float = _PAUSE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout = timeout
        self._pause = pause
        self._clock = clock
        self._lock = threading.Lock()
        self._armed: dict[int, tuple[float, int]] = {}  # token: (deadline, socket fd)
        self._next_token = 0
        self._failing = False
        self._hold_until = 0.0  # while failing: calls before this fail at once
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    # -- the pause --------------------------------------------------------------------
    def admit(self) -> None:
        """Raise StoreUnavailable while the database is known not to answer. After the
        pause the first caller goes ahead (the others still fail) until it is answered."""
        if not self._failing:
            return
        with self._lock:
            now = self._clock()
            if now < self._hold_until:
                raise StoreUnavailable("storage failed: the database does not answer")
            self._hold_until = now + self.timeout + self._pause  # this caller's try

    def failed(self) -> None:
        """A connection could not be made, or a call ran out of time."""
        with self._lock:
            self._failing = True
            self._hold_until = self._clock() + self._pause

    def answered(self) -> None:
        """A call went through: the database answers again."""
        if self._failing:
            with self._lock:
                self._failing = False
                self._hold_until = 0.0

    # -- deadlines --------------------------------------------------------------------
    def arm(self, fd: int) -> int:
        """Start the deadline of a call on the connection whose socket is ``fd``; the
        token for ``disarm``. The caller must disarm before it closes the connection."""
        with self._lock:
            token = self._next_token
            self._next_token += 1
            self._armed[token] = (self._clock() + self.timeout, fd)
            if self._watchdog is None:
                self._watchdog = threading.Thread(
                    target=self._watch, name="postroom-db-watchdog", daemon=True
                )
                self._watchdog.start()
        return token

    def disarm(self, token: int) -> bool:
        """End the call's deadline; True when it ran out (its socket was shut down)."""
        with self._lock:
            return self._armed.pop(token, None) is None

    def close(self) -> None:
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join()

    def _watch(self) -> None:
        tick = min(0.25, self.timeout / 4)
        while not self._stop.wait(tick):
            with self._lock:
                now = self._clock()
                late = [t for t, (deadline, _) in self._armed.items() if deadline <= now]
                for token in late:
                    _, fd = self._armed.pop(token)
                    _shut_down(fd)
                if late:
                    self._failing = True
                    self._hold_until = now + self._pause


def _shut_down(fd: int) -> None:
    """End the connection on socket ``fd`` without closing the descriptor its owner holds
    (shutdown acts on the socket, whichever descriptor names it): a read blocked on it
    returns at once, and the owner closes its descriptor as usual."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    with sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
