"""New-mail notification: wake the sessions watching a folder when it changes.

In the process that changes a folder (the local mailer's delivery, an APPEND, a flag
change) the store calls ``changed(path)``, which wakes that folder's watchers at once.
Changes made by other processes (an accept worker's session, ``postroom`` commands,
another mail tool on the same Maildir) are seen by a poll: while a folder has watchers,
one task per folder stats its ``new/``, ``cur/`` and ``dovecot-uidlist`` every
``interval`` seconds (1 s by default), so a change wakes them within that time. A
thousand IDLE sessions on one folder cost one poll; inotify would save the polls but is
not in the standard library.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

__all__ = ["FolderWatch", "Watchers"]

Stamp = Callable[[Path], object]


class FolderWatch:
    """One watcher's view: ``wait()`` returns after the next change (or at once if
    one happened since the last ``wait()`` returned)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def _set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event.clear()


class _Folder:
    def __init__(self) -> None:
        self.watches: set[FolderWatch] = set()
        self.poller: asyncio.Task[None] | None = None


class Watchers:
    """Every watched folder of one store. ``stamp(path)`` is what the poll compares."""

    def __init__(self, stamp: Stamp, *, interval: float = 1.0) -> None:
        self._stamp = stamp
        self._interval = interval
        self._folders: dict[Path, _Folder] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextlib.asynccontextmanager
    async def watch(self, path: Path) -> AsyncIterator[FolderWatch]:
        self._loop = asyncio.get_running_loop()
        folder = self._folders.setdefault(path, _Folder())
        watch = FolderWatch()
        folder.watches.add(watch)
        if folder.poller is None:
            folder.poller = self._loop.create_task(self._poll(path, folder))
        try:
            yield watch
        finally:
            folder.watches.discard(watch)
            if not folder.watches:
                del self._folders[path]
                if folder.poller is not None:
                    folder.poller.cancel()

    def changed(self, path: Path) -> None:
        """``path`` changed (from any thread): wake its watchers."""
        loop = self._loop
        if loop is None or path not in self._folders:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(self._wake, path)

    def _wake(self, path: Path) -> None:
        folder = self._folders.get(path)
        if folder is not None:
            for watch in folder.watches:
                watch._set()

    async def _poll(self, path: Path, folder: _Folder) -> None:
        last = await asyncio.to_thread(self._stamp, path)
        while True:
            await asyncio.sleep(self._interval)
            now = await asyncio.to_thread(self._stamp, path)
            if now != last:
                last = now
                for watch in folder.watches:
                    watch._set()
