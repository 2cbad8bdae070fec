"""RCPT's lookup without a round trip: the directory's answers kept in memory, exact.

Every change to the ``domains`` or ``users`` table NOTIFYs ``DIRECTORY_CHANNEL`` (a
statement trigger in the schema, so every writer counts: every node, the CLI, an
operator's psql, ``db copy``). The store's one listening connection (``notices``)
tells the cache, which forgets every answer at each notification. Three rules keep an
answer from outliving the commit that changed it:

- **No listener, no cache.** Until the LISTEN is in place, and from the moment its
  connection is lost until it is in place again, every lookup reads through: a
  notification missed while not listening can never leave a stale answer behind.
- **A read is kept only if nothing was heard while it ran** (a generation count): an
  answer read just before a commit is not stored after that commit's notification.
- **Bounded**: past ``size`` answers the cache starts afresh (a client probing random
  addresses cannot grow it without end).

What remains is the notification's own delay: another node's change is seen here when
its notification arrives, a moment after its commit (the same moment a queue wake-up
takes).
"""

from __future__ import annotations

import logging

from postroom.store.postgres.notices import Notices

__all__ = ["DIRECTORY_CHANNEL", "DirectoryCache"]

DIRECTORY_CHANNEL = "postroom_directory"  # schema.sql's directory triggers NOTIFY here
_log = logging.getLogger("postroom.store")

_SIZE = 50_000  # answers kept at most


class DirectoryCache:
    """RCPT's answers (``PostgresStore.recipient``: is the domain local, does the user
    exist) by domain and address, valid while the store listens for changes."""

    def __init__(self, notices: Notices, *, size: int = _SIZE) -> None:
        self._notices = notices
        self._size = size
        self._answers: dict[tuple[str, str], tuple[bool, bool]] = {}
        self._generation = 0
        self._listening = False
        self._subscribed = False

    @property
    def listening(self) -> bool:
        """True while answers may be kept (the LISTEN is in place)."""
        return self._listening

    @property
    def generation(self) -> int:
        """Counts the times every answer was forgotten (each change heard, each loss)."""
        return self._generation

    def get(self, domain: str, address: str) -> tuple[bool, bool] | None:
        """The answer kept, or None; starts listening on first use."""
        if not self._subscribed:
            self._subscribed = True
            self._notices.subscribe(self)
        return self._answers.get((domain, address)) if self._listening else None

    def keep(self, domain: str, address: str, answer: tuple[bool, bool], generation: int) -> None:
        """Keep ``answer``, read since ``generation``, unless something changed meanwhile."""
        if not self._listening or generation != self._generation:
            return
        if len(self._answers) >= self._size:
            self._answers.clear()
        self._answers[(domain, address)] = answer

    def _forget(self) -> None:
        self._answers.clear()
        self._generation += 1

    # -- told by the store's notices -------------------------------------------------
    def on_listening(self) -> None:
        self._forget()  # what was read before is not known to be current
        self._listening = True

    def on_notify(self, channel: str) -> None:
        if channel == DIRECTORY_CHANNEL:
            self._forget()

    def on_lost(self, exc: Exception) -> None:
        if self._listening:
            _log.warning("directory cache off until the database is back: %s", exc)
        self._listening = False
        self._forget()
