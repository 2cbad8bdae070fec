"""RCPT's lookup without a round trip: the directory's answers kept in memory, exact.

Every change to the ``domains`` or ``users`` table NOTIFYs ``DIRECTORY_CHANNEL`` (a
statement trigger in the schema, so every writer counts: every node, the CLI, an
operator's psql, ``db copy``). A store LISTENs on a connection of its own and forgets
every answer at each notification. Three rules keep an answer from outliving the
commit that changed it:

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

import asyncio
import contextlib
import logging

import psycopg

from postroom.store.postgres.guard import conninfo

__all__ = ["DIRECTORY_CHANNEL", "DirectoryCache"]

DIRECTORY_CHANNEL = "postroom_directory"  # schema.sql's directory triggers NOTIFY here
_log = logging.getLogger("postroom.store")

_SIZE = 50_000  # answers kept at most
_RETRY = (0.1, 5.0)  # seconds before listening again after a loss: first, at most


class DirectoryCache:
    """RCPT's answers (``PostgresStore.recipient``: is the domain local, does the user
    exist) by domain and address, valid while this cache listens for changes."""

    def __init__(
        self,
        url: str,
        timeout: float,
        *,
        size: int = _SIZE,
        retry: tuple[float, float] = _RETRY,
    ) -> None:
        self._url = url
        self._timeout = timeout
        self._size = size
        self._retry = retry
        self._answers: dict[tuple[str, str], tuple[bool, bool]] = {}
        self._generation = 0
        self._listening = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False

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
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._listen(), name="postroom-directory-cache"
            )
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

    async def _listen(self) -> None:
        """LISTEN until closed; after a loss, read through until listening again."""
        first, most = self._retry
        retry = first
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    conninfo(self._url, self._timeout), autocommit=True
                )
                async with conn:
                    await conn.execute(f"LISTEN {DIRECTORY_CHANNEL}")
                    self._forget()  # what was read before is not known to be current
                    self._listening = True
                    retry = first
                    async for _ in conn.notifies():
                        self._forget()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any fault: read through, then listen again
                if self._listening:
                    _log.warning("directory cache off until the database is back: %s", exc)
            finally:
                self._listening = False
                self._forget()
            await asyncio.sleep(retry)
            retry = min(retry * 2, most)

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
