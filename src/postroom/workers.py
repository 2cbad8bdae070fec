"""Accept workers: extra processes that share the listening sockets (``workers > 1``).

One event loop on one core bounds how much mail one process can accept. With
``workers = N`` the primary process binds every listener, then starts N - 1 workers,
each a fresh interpreter (``python -m postroom serve --worker``) that inherits the
listening sockets and accepts on them too; the kernel hands each new connection to one
process. Every worker commits into the same store (SQLite serialises the writers; each
commit is still fsync'ed before its 250) and wakes the primary's scheduler through
``net.wakeup``. Only the primary delivers.

The settings reach a worker pickled on its standard input; the pipe then stays open.
A byte on it asks the worker to reload its TLS certificate (the primary's SIGHUP: a
pipe keeps the request for a worker still starting, where a signal would end it), and a
worker whose pipe closes (the primary died, even by SIGKILL) drains and exits.
A worker that dies is started again: each worker's watcher is a task of the server's
``TaskSupervisor``, which logs the exit and runs the watcher again (starting a new
worker) after a pause that grows while it keeps dying; a failed fork is retried alike.

A second pipe runs the other way, for ``/metrics``: the primary writes ``C`` on a
worker's standard input and the worker answers with one line of JSON on its report
pipe, its counters (``events.counts.ProcessCounts.snapshot``). Asked when
scraped, so the counts are the workers' at that moment, not a poll's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import pickle
import signal
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from postroom.config.settings import ListenerSettings, Settings
from postroom.net.sockets import listening_socket
from postroom.supervise import TaskSupervisor

__all__ = ["Supervisor", "WorkerExited", "WorkerSetup", "bind_listeners", "read_setup"]

_log = logging.getLogger("postroom.workers")
_LENGTH = struct.Struct("!I")  # the setup's length, before it on the pipe
_RELOAD = b"R"
_COUNTS = b"C"
_REPORT_WAIT = 2.0  # seconds a scrape waits for a worker's counts (a busy worker skipped)


class WorkerExited(Exception):
    """A worker process ended while the server was running."""


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What a worker is told on its standard input."""

    settings: Settings
    fds: tuple[int, ...]  # listening sockets, in the order of settings.listeners
    index: int  # 1 .. workers - 1 (the primary is 0)
    report_fd: int = -1  # the pipe the worker answers the primary's questions on


def bind_listeners(listeners: Sequence[ListenerSettings]) -> list[socket.socket]:
    """Bind and listen on every listener's address, as asyncio's servers would."""
    sockets: list[socket.socket] = []
    try:
        for spec in listeners:
            sock = listening_socket(spec.address, spec.port, backlog=1024, v6only=True)
            sock.set_inheritable(True)
            sockets.append(sock)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def read_setup() -> WorkerSetup:
    """In a worker: the setup its primary wrote on standard input, read to its last
    byte and no further (what follows is for ``watch_primary``)."""
    (length,) = _LENGTH.unpack(_read_exactly(sys.stdin.fileno(), _LENGTH.size))
    setup = pickle.loads(_read_exactly(sys.stdin.fileno(), length))
    if not isinstance(setup, WorkerSetup):
        raise TypeError("not a worker setup")
    return setup


def _read_exactly(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError("the primary closed the pipe before the setup's end")
        data += chunk
    return data


class Supervisor:
    """Starts, watches and stops the accept workers of one primary."""

    def __init__(
        self,
        settings: Settings,
        sockets: Sequence[socket.socket],
        *,
        command: Sequence[str] = (sys.executable, "-m", "postroom", "serve", "--worker"),
    ) -> None:
        self._settings = settings
        self._sockets = list(sockets)
        self._command = list(command)
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._reports: dict[int, _Reports] = {}
        self._stopping = False

    def stop_requested(self) -> bool:
        return self._stopping

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs.values() if proc.returncode is None]

    async def start(self, tasks: TaskSupervisor) -> None:
        """Start the workers, and a watcher for each as one of ``tasks``."""
        for index in range(1, self._settings.workers):
            await self._spawn(index)
            tasks.start(f"worker-{index}", functools.partial(self._watch, index))

    async def _spawn(self, index: int) -> None:
        fds = tuple(sock.fileno() for sock in self._sockets)
        read_end, write_end = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._command, stdin=asyncio.subprocess.PIPE, pass_fds=(*fds, write_end)
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)  # the worker's now: its end is how we see it gone
        assert proc.stdin is not None
        setup = pickle.dumps(WorkerSetup(self._settings, fds, index, write_end))
        proc.stdin.write(_LENGTH.pack(len(setup)) + setup)
        # The pipe stays open: its end tells the worker that the primary is gone.
        self._procs[index] = proc
        old = self._reports.pop(index, None)
        if old is not None:
            old.close()
        self._reports[index] = await _Reports.open(read_end)
        _log.info("worker %d started (pid %d)", index, proc.pid)

    async def _watch(self, index: int) -> None:
        """Wait on worker ``index``; its exit before stop() raises, so that the task
        supervisor logs it and runs this again after its pause, which starts a new one."""
        if self.stop_requested():
            return
        proc = self._procs[index]
        if proc.returncode is not None:
            await self._spawn(index)
            proc = self._procs[index]
        code = await proc.wait()
        if not self.stop_requested():
            raise WorkerExited(f"worker {index} (pid {proc.pid}) exited with {code}")

    async def counts(self) -> list[dict[str, Any]]:
        """Every running worker's counters, asked now; a worker that does not
        answer within a moment (starting, or stopped) is left out of this scrape."""
        asked = [
            (proc, self._reports[index])
            for index, proc in self._procs.items()
            if proc.returncode is None and proc.stdin is not None and index in self._reports
        ]
        answers = await asyncio.gather(*(report.ask(proc) for proc, report in asked))
        return [answer for answer in answers if answer is not None]

    def reload_certificate(self) -> None:
        """Ask every worker to reload its TLS certificate (the primary got SIGHUP)."""
        for proc in self._procs.values():
            if proc.returncode is None and proc.stdin is not None:
                proc.stdin.write(_RELOAD)

    async def stop(self, grace: float) -> None:
        """SIGTERM every worker (each drains like the primary); SIGKILL what is left
        after ``grace`` seconds and a little more."""
        self._stopping = True
        for proc in self._procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        waits = [proc.wait() for proc in self._procs.values()]
        try:
            async with asyncio.timeout(grace + 5.0):
                await asyncio.gather(*waits)
        except TimeoutError:
            for proc in self._procs.values():
                if proc.returncode is None:
                    _log.error("worker pid %d did not stop in time: killed", proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*(proc.wait() for proc in self._procs.values()))
        for proc in self._procs.values():
            if proc.stdin is not None:
                proc.stdin.close()
        for report in self._reports.values():
            report.close()


class _Reports:
    """The primary's end of one worker's report pipe: one question at a time; an answer
    that came too late is read and dropped before the next question's."""

    def __init__(self, reader: asyncio.StreamReader, transport: asyncio.BaseTransport) -> None:
        self._reader = reader
        self._transport = transport
        self._lock = asyncio.Lock()
        self._owed = 0  # questions whose answers have not been read

    @classmethod
    async def open(cls, fd: int) -> _Reports:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1024 * 1024)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
        )
        return cls(reader, transport)

    async def ask(self, proc: asyncio.subprocess.Process) -> dict[str, Any] | None:
        async with self._lock:
            assert proc.stdin is not None
            proc.stdin.write(_COUNTS)
            self._owed += 1
            try:
                async with asyncio.timeout(_REPORT_WAIT):
                    line = b""
                    while self._owed:
                        line = await self._reader.readline()
                        if not line:  # the worker is gone
                            return None
                        self._owed -= 1
            except TimeoutError:
                _log.debug("worker pid %d did not report its counts in time", proc.pid)
                return None
        try:
            answer = json.loads(line)
        except ValueError:
            return None
        return answer if isinstance(answer, dict) else None

    def close(self) -> None:
        self._transport.close()


def watch_primary(
    on_gone: asyncio.Event,
    on_reload: Callable[[], None],
    counts: Callable[[], dict[str, Any]] | None = None,
    report_fd: int = -1,
) -> None:
    """In a worker: set ``on_gone`` when standard input (the primary's pipe) closes,
    call ``on_reload`` when the primary asks for a certificate reload on it, and write
    ``counts()`` as a line of JSON on ``report_fd`` for each time it asks for them."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        if not data:
            loop.remove_reader(fd)
            on_gone.set()
            return
        if _RELOAD in data:  # several requests read at once: one reload serves them
            on_reload()
        if counts is not None and report_fd >= 0:
            line = json.dumps(counts()).encode() + b"\n"
            for _ in range(data.count(_COUNTS)):  # one answer per question: none is owed
                _write_all(report_fd, line)

    loop.add_reader(fd, readable)


def _write_all(fd: int, data: bytes) -> None:
    """The whole line on the blocking report pipe (a few hundred bytes: the primary,
    which asked, is reading), or nothing when the primary is gone."""
    with contextlib.suppress(BrokenPipeError):
        while data:
            data = data[os.write(fd, data) :]
