"""New-mail notification: wake the sessions watching a folder when it changes.

One task per watched folder does the looking for every session watching it: it looks
at the folder (``look(path)``, a sync in a worker thread, returning the look's version)
when this process changed the folder (``changed(path)``: a delivery by the local mailer,
an APPEND, a flag change, which wake it at once) and every ``interval`` seconds (1 s by
default) for changes made by other processes (an accept worker's session, ``postroom``
commands, another mail tool on the same Maildir). After a change here, or when a poll's
version moved, it wakes every watcher with that version (``FolderWatch.version``); a
woken session asks the store for the changes since its view up to that look, which the
store answers from memory (``MailAccount.changes(looked=...)``), so a thousand IDLE
sessions on one folder cost one look per change, not a thousand. inotify would save the
polls but is not in the standard library.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

__all__ = ["FolderWatch", "Watchers"]

_log = logging.getLogger("postroom.mailbox")

Look = Callable[[Path], int]


class FolderWatch:
    """One watcher's view: ``wait()`` returns after the next change (or at once if
    one happened since the last ``wait()`` returned)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.version: int | None = None  # of the look that found the last change

    def _set(self, version: int | None) -> None:
        self.version = version
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event.clear()


class _Folder:
    def __init__(self) -> None:
        self.watches: set[FolderWatch] = set()
        self.changed = asyncio.Event()  # this process changed it: look now
        self.looker: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()  # the looker's first look, every change's baseline


class Watchers:
    """Every watched folder of one store."""

    def __init__(self, look: Look, *, interval: float = 1.0) -> None:
        self._look = look
        self._interval = interval
        self._folders: dict[Path, _Folder] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextlib.asynccontextmanager
    async def watch(self, path: Path) -> AsyncIterator[FolderWatch]:
        self._loop = asyncio.get_running_loop()
        folder = self._folders.setdefault(path, _Folder())
        watch = FolderWatch()
        folder.watches.add(watch)
        if folder.looker is None:
            folder.looker = self._loop.create_task(self._keep_looking(path, folder))
        try:
            # Not before the first look: a change made after watch() returned but before
            # that look would be taken into its baseline, and never reported.
            await folder.ready.wait()
            yield watch
        finally:
            folder.watches.discard(watch)
            if not folder.watches:
                del self._folders[path]
                if folder.looker is not None:
                    folder.looker.cancel()

    def changed(self, path: Path) -> None:
        """``path`` changed (from any thread): its watchers hear of it after one look."""
        loop = self._loop
        if loop is None or path not in self._folders:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(self._kick, path)

    def _kick(self, path: Path) -> None:
        folder = self._folders.get(path)
        if folder is not None:
            folder.changed.set()

    async def _keep_looking(self, path: Path, folder: _Folder) -> None:
        last = await self._version(path)
        folder.ready.set()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await folder.changed.wait()
            kicked = folder.changed.is_set()  # changed here since the watch began
            folder.changed.clear()
            now = await self._version(path)
            if kicked or now != last or now is None:
                last = now
                for watch in folder.watches:
                    watch._set(now)

    async def _version(self, path: Path) -> int | None:
        """The look's version; None when the folder cannot be looked at (removed, or
        disk trouble): its watchers are woken to find out for themselves."""
        try:
            return await asyncio.to_thread(self._look, path)
        except Exception as error:  # reported to the sessions by their own look
            _log.debug("watched folder %s: %s", path, error)
            return None
