"""One LISTENing connection per store, for every channel the schema NOTIFYs.

The scheduler's wake-ups (``QUEUE_CHANNEL``: another node committed mail or made it due)
and the directory cache's invalidations (``DIRECTORY_CHANNEL``) used to hold a connection
each; a node now holds one for both. The connection LISTENs to every channel from the
start (a LISTEN added later would have to wait for the iteration over notifications to
let go of the connection), and tells each subscriber:

- ``on_listening()`` once the LISTENs are in place, each time they are (again, after a
  loss), and at once to a subscriber that arrives while they are;
- ``on_notify(channel)`` for each notification;
- ``on_lost(exc)`` when the connection is lost or cannot be made: a notification may have
  been missed until the next ``on_listening()``.

After a loss it connects again after a pause (0.1 s, doubling up to 5 s), for as long as
the store is open; it starts with the first subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

import psycopg

from postroom.errors import StoreUnavailable
from postroom.store.postgres.guard import conninfo

__all__ = ["Notices", "Subscriber"]

_log = logging.getLogger("postroom.store")
_RETRY = (0.1, 5.0)  # seconds before listening again after a loss: first, at most


class Subscriber(Protocol):
    def on_listening(self) -> None: ...

    def on_notify(self, channel: str) -> None: ...

    def on_lost(self, exc: Exception) -> None: ...


class Notices:
    """The store's one LISTENing connection, shared by its subscribers."""

    def __init__(
        self,
        url: str,
        timeout: float,
        channels: tuple[str, ...],
        *,
        retry: tuple[float, float] = _RETRY,
    ) -> None:
        self._url = url
        self._timeout = timeout
        self._channels = channels
        self._retry = retry
        self._subscribers: list[Subscriber] = []
        self._listening = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def listening(self) -> bool:
        return self._listening

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Tell ``subscriber`` from now on (``on_listening()`` at once if listening); starts
        the connection on first use. Returns what unsubscribes it."""
        self._subscribers.append(subscriber)
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._listen(), name="postroom-notices"
            )
        if self._listening:
            _tell(subscriber.on_listening)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(subscriber)

        return unsubscribe

    async def _listen(self) -> None:
        first, most = self._retry
        retry = first
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    conninfo(self._url, self._timeout), autocommit=True
                )
                async with conn:
                    for channel in self._channels:
                        await conn.execute(f"LISTEN {channel}")
                    self._listening = True
                    retry = first
                    for subscriber in list(self._subscribers):
                        _tell(subscriber.on_listening)
                    async for note in conn.notifies():
                        for subscriber in list(self._subscribers):
                            _tell(subscriber.on_notify, note.channel)
                raise StoreUnavailable("the database closed the connection that listens")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any fault: tell them, then listen again
                self._listening = False
                for subscriber in list(self._subscribers):
                    _tell(subscriber.on_lost, exc)
            finally:
                self._listening = False
            await asyncio.sleep(retry)
            retry = min(retry * 2, most)

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _tell(call: Callable[..., None], *args: str | Exception) -> None:
    """A subscriber's fault is logged, and never stops the others or the listening."""
    try:
        call(*args)
    except Exception:
        _log.exception("a subscriber to the database's notifications failed")
