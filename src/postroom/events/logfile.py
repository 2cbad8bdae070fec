"""Where log lines go: a file (``log.file``) or standard error, written in batches.

At ``info`` postroom writes a line or two for every message; written one ``write`` at a
time (and, for a file, one ``stat`` each to notice logrotate), those system calls cost
more than formatting the lines. This handler keeps the lines logged during one turn of
the event loop and writes them with one call at the end of the turn, so a burst of
sessions costs one write, not one per line. Nothing waits longer than that turn: a line
of level ``warning`` or above is written at once (with the ones before it, in order), as
is every line logged outside the event loop's thread. Each write appends a whole batch
(``O_APPEND``), so the accept workers' lines never interleave within a line.

A file is reopened when logrotate has moved it away (its default "create" mode), which
is checked at most once a second: ``os.stat`` of the path against the open file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["BatchedLogHandler"]

REOPEN_CHECK = 1.0  # seconds between checks that the file is still the one at the path


class BatchedLogHandler(logging.Handler):
    def __init__(
        self, path: Path | None = None, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        """``path``: the file to append to; None: standard error."""
        super().__init__()
        self._path = path
        self._monotonic = monotonic
        self._pending: list[str] = []
        self._flush_scheduled = False
        self._checked_at = monotonic()
        self._fd = self._open() if path is not None else sys.stderr.fileno()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    def _open(self) -> int:
        assert self._path is not None
        return os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def emit(self, record: logging.LogRecord) -> None:
        # logging.Handler.handle holds self.lock around emit.
        try:
            self._pending.append(self.format(record) + "\n")
        except Exception:
            self.handleError(record)
            return
        loop = self._running_loop()
        if record.levelno >= logging.WARNING or loop is None:
            self._write_pending()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self.flush)

    def _running_loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop running in this thread, if any (cached per thread: asking
        asyncio costs more than the rest of a line)."""
        thread = threading.get_ident()
        if thread == self._loop_thread and self._loop is not None and self._loop.is_running():
            return self._loop
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        self._loop_thread = thread
        return self._loop

    def flush(self) -> None:
        self.acquire()
        try:
            self._flush_scheduled = False
            self._write_pending()
        finally:
            self.release()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        data = "".join(self._pending).encode("utf-8", "backslashreplace")
        self._pending.clear()
        self._reopen_if_moved()
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:  # a full disk must not take the server down with it
            print(f"postroom: cannot write the log: {exc}", file=sys.stderr)

    def _reopen_if_moved(self) -> None:
        if self._path is None:
            return
        now = self._monotonic()
        if now - self._checked_at < REOPEN_CHECK:
            return
        self._checked_at = now
        try:
            at_path = os.stat(self._path)
        except FileNotFoundError:
            at_path = None
        here = os.fstat(self._fd)
        if at_path is None or (at_path.st_dev, at_path.st_ino) != (here.st_dev, here.st_ino):
            try:
                fd = self._open()
            except OSError as exc:
                print(f"postroom: cannot reopen the log {self._path}: {exc}", file=sys.stderr)
                return
            os.close(self._fd)
            self._fd = fd

    def close(self) -> None:
        self.acquire()
        try:
            self._write_pending()
            if self._path is not None and self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        finally:
            self.release()
        super().close()
