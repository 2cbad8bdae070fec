"""Maildir deliveries made durable together: a group commit for files going into ``new/``.

A delivery writes its file into ``tmp/`` (not yet fsync'ed) and hands it here with its
descriptor still open. One thread takes the files handed in over a few milliseconds and,
for the whole batch: fsyncs each file, renames each into ``new/``, then fsyncs each
``new/`` folder once. A delivery's waiter is answered only when its own file is durable
in ``new/``; the waiters of one event loop in one call, so the loop wakes once a batch.

Why a batch: a delivery in a worker thread of its own paid a hand-over there and back,
and each of its file calls released and re-took the GIL the event loop needs; with the
loop busy, each re-take was a futex wait and a context switch. A batch pays one
hand-over and one wake-up for all its files, and one fsync of ``new/`` for all of them.
The files' own fsyncs are unchanged: one each, before its rename, as Maildir asks.

Failures are each file's own: an fsync or a rename that fails removes that file from
``tmp/`` and answers its waiter with the error; an fsync of ``new/`` that fails answers
every file renamed into it in that batch with the error (the file is there, but not
durable: the caller retries, so the message may arrive twice, never lost). Nothing that
goes wrong in the thread stops it: a batch that fails as a whole answers all its waiters
with the error, and the thread goes on with the next.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["GroupSync", "fsync_dir"]

_log = logging.getLogger("postroom.mailbox")

# How long the first file of a batch waits for others: at about a thousand deliveries a
# second that gathers four or five, and it adds to a delivery's latency, never to the
# 250's (the message is durable in the queue before its delivery starts).
GATHER: Final = 0.005
MOST: Final = 64  # files in one batch: a batch this full starts at once
IDLE: Final = 10.0  # seconds the thread waits for work before it ends (started again on demand)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync(fd: int) -> None:
    os.fsync(fd)


@dataclass(slots=True)
class _File:
    fd: int
    tmp: str
    new: str
    folder: str  # new/'s path, fsync'ed once a batch
    landed: Callable[[], object] | None  # run in the thread once the file is durable
    loop: asyncio.AbstractEventLoop | None  # None: a thread waits on ``waiter``
    waiter: asyncio.Future[None] | concurrent.futures.Future[None]
    error: BaseException | None = None


class GroupSync:
    """Files written into ``tmp/``, made durable in ``new/`` in batches by one thread."""

    def __init__(
        self,
        *,
        gather: float = GATHER,
        most: int = MOST,
        idle: float = IDLE,
        sync_file: Callable[[int], None] = _fsync,
        sync_folder: Callable[[str], None] = fsync_dir,
    ) -> None:
        """``sync_file`` and ``sync_folder``: the fsyncs (``os.fsync`` and ``fsync_dir``;
        a test makes them fail)."""
        self._gather = gather
        self._most = most
        self._idle = idle
        self._sync_file = sync_file
        self._sync_folder = sync_folder
        self._ready = threading.Condition()
        self._waiting: list[_File] = []
        self._syncer: threading.Thread | None = None

    async def land(
        self, fd: int, tmp: str, new: str, folder: str, landed: Callable[[], object] | None = None
    ) -> None:
        """Return once ``tmp`` (written through ``fd``, which is now this object's to
        close) is durable as ``new`` in ``folder``; ``landed`` runs first, in the thread.
        ``OSError`` when it could not be (``tmp`` is removed unless renamed already).
        Cancelling the wait does not stop the file from landing."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._hand_in(_File(fd, tmp, new, folder, landed, loop, waiter))
        await waiter

    def land_blocking(
        self, fd: int, tmp: str, new: str, folder: str, landed: Callable[[], object] | None = None
    ) -> None:
        """``land`` for code that is not on an event loop (it blocks until then)."""
        waiter: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._hand_in(_File(fd, tmp, new, folder, landed, None, waiter))
        waiter.result()

    def _hand_in(self, file: _File) -> None:
        with self._ready:
            self._waiting.append(file)
            if self._syncer is None:
                thread = threading.Thread(target=self._run, name="maildir-sync", daemon=True)
                try:
                    thread.start()
                except BaseException:  # no thread to be had: this file is not taken
                    self._waiting.remove(file)
                    os.close(file.fd)
                    with contextlib.suppress(OSError):
                        os.unlink(file.tmp)
                    raise
                self._syncer = thread
            elif len(self._waiting) in (1, self._most):
                self._ready.notify()

    def _run(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                try:
                    self._sync(batch)
                except BaseException as error:  # a fault of our own: no waiter left hanging
                    _log.exception("making %d Maildir file(s) durable failed", len(batch))
                    for file in batch:
                        file.error = file.error or error
                self._answer(batch)
        finally:  # however it ends, the next file handed in starts another
            with self._ready:
                if self._syncer is threading.current_thread():
                    self._syncer = None

    def _next_batch(self) -> list[_File] | None:
        """The files handed in, once the first has waited ``gather`` for others (or
        ``most`` are waiting); None when none came for ``idle`` seconds (the thread ends)."""
        with self._ready:
            if not self._waiting:
                self._ready.wait(self._idle)
                if not self._waiting:
                    self._syncer = None
                    return None
            deadline = time.monotonic() + self._gather
            while len(self._waiting) < self._most:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(left)
            batch, self._waiting = self._waiting, []
            return batch

    def _sync(self, batch: list[_File]) -> None:
        """Each file fsync'ed, then renamed, then each ``new/`` fsync'ed once."""
        for file in batch:
            try:
                self._sync_file(file.fd)
            except Exception as error:  # that file's trouble, not the batch's
                file.error = error
            try:
                os.close(file.fd)
            except OSError as error:  # a close can report a failed write-back (NFS)
                file.error = file.error or error
        for folder, renamed in _renamed(batch).items():
            try:
                self._sync_folder(folder)
            except OSError as error:
                for file in renamed:
                    file.error = error
        for file in batch:
            if file.error is None and file.landed is not None:
                try:
                    file.landed()
                except Exception:  # the file is durable all the same
                    _log.exception("after delivering %s", file.new)

    def _answer(self, batch: list[_File]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_File]] = {}
        for file in batch:
            if file.loop is None:
                _settle(file)
            else:
                by_loop.setdefault(file.loop, []).append(file)
        for loop, files in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(_answer_on_loop, files)


def _renamed(batch: list[_File]) -> dict[str, list[_File]]:
    """Rename each file synced without error into ``new/`` (a file that failed, at its
    fsync or here, is removed from ``tmp/``); the files renamed, by folder."""
    folders: dict[str, list[_File]] = {}
    for file in batch:
        if file.error is None:
            try:
                os.rename(file.tmp, file.new)
            except OSError as error:
                file.error = error
            else:
                folders.setdefault(file.folder, []).append(file)
                continue
        with contextlib.suppress(OSError):
            os.unlink(file.tmp)
    return folders


def _answer_on_loop(files: list[_File]) -> None:
    for file in files:
        _settle(file)


def _settle(file: _File) -> None:
    """Answer ``file``'s waiter (on its loop's thread when it has one), unless its wait
    was cancelled."""
    waiter = file.waiter
    if waiter.done():
        return
    if file.error is None:
        waiter.set_result(None)
    else:
        waiter.set_exception(file.error)
