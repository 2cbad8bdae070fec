"""Accept workers: extra processes that share the listening sockets (``workers > 1``).

One event loop on one core bounds how much mail one process can accept. With
``workers = N`` the primary process binds every listener and starts N workers that
accept SMTP on the same sockets; each new connection goes to the worker holding fewest
(``net.shares``: each accepts one at a time and steps aside for one holding fewer). The
primary leaves SMTP to them, its loop and its writer free for the commits, the
deliveries, the API and the mailboxes; it accepts SMTP only while no worker is up (at
its start, or while every worker is being started again: ``net.listener``). Every
worker commits into the same store (SQLite serialises the writers; each commit is still
fsync'ed before its 250) and wakes the primary's scheduler through ``net.wakeup``. Only
the primary delivers queued mail; a worker delivers the local and relay mail it accepted
itself, at once (``delivery.direct``), and tells the primary's alerts of those attempts
(``events.forward``).

Workers are forked from the primary at its start (``workerprocs.py``), before it has an
event loop, a thread or a store connection, so that they share its memory and never
inherit those; a worker started again after one died is a fresh interpreter.

The primary gives each worker two pipes. On the command pipe, a
byte asks the worker to reload its TLS certificate (the primary's SIGHUP: a pipe keeps
the request for a worker still starting, where a signal would end it) or for its
counters (``/metrics``); its end (the primary died, even by SIGKILL) makes the worker
drain and exit. On the report pipe the worker says once that it is listening, then
answers each request for counters with a line of JSON
(``events.counts.ProcessCounts.snapshot``). The primary waits for every worker to
listen before it says it is ready; a worker that exits first, or is not listening after
``START_WAIT`` seconds, fails the start with one line.

A worker that dies is started again: each worker's watcher is a task of the server's
``TaskSupervisor``, which logs the exit and runs the watcher again (forking a new
worker) after a pause that grows while it keeps dying.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from postroom.config.settings import ListenerSettings, Settings
from postroom.net.shares import AcceptShares
from postroom.net.sockets import listening_socket
from postroom.readiness import Readiness
from postroom.supervise import TaskSupervisor
from postroom.workerprocs import WorkerExited, WorkerProcesses, WorkerSetup, worker_indexes

__all__ = [
    "START_WAIT",
    "Supervisor",
    "bind_listeners",
    "report_start",
    "watch_primary",
]

_log = logging.getLogger("postroom.workers")
_RELOAD = b"R"
_COUNTS = b"C"
_LISTENING = b"listening\n"  # a worker's first line on its report pipe, or _FAILED's
_FAILED = b"failed: "
_REPORT_WAIT = 2.0  # seconds a scrape waits for a worker's counts (a busy worker skipped)
START_WAIT = 30.0  # seconds a new worker has by default to listen


def bind_listeners(listeners: Sequence[ListenerSettings]) -> list[socket.socket]:
    """Bind and listen on every listener's address, as asyncio's servers would."""
    sockets: list[socket.socket] = []
    try:
        for spec in listeners:
            sockets.append(listening_socket(spec.address, spec.port, backlog=1024, v6only=True))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def report_start(report_fd: int, *, failed: str | None = None) -> None:
    """In a worker: tell the primary that every listener accepts now, or (``failed``)
    why it cannot start."""
    if failed is None:
        _write_all(report_fd, _LISTENING)
    else:
        _write_all(report_fd, _FAILED + " ".join(failed.split()).encode(errors="replace") + b"\n")


@dataclass(eq=False)
class _Worker:
    index: int
    pid: int
    command_fd: int
    reports: _Reports
    exited: asyncio.Future[int]
    listening: bool = False
    closed: bool = False

    def send(self, request: bytes) -> None:
        if not self.exited.done():
            with contextlib.suppress(OSError):  # gone: its exit is on the way
                os.write(self.command_fd, request)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.command_fd)
            self.reports.close()


class Supervisor:
    """Starts, watches and stops the accept workers of one primary."""

    def __init__(
        self,
        settings: Settings,
        processes: WorkerProcesses,
        shares: AcceptShares,
        *,
        start_wait: float = START_WAIT,
    ) -> None:
        """``shares``: the accepting processes' counts, where an exited worker is marked
        as accepting no more; ``start_wait``: seconds a new worker has to listen before
        it counts as failed."""
        self._settings = settings
        self._processes = processes
        self._shares = shares
        self._start_wait = start_wait
        self._workers: dict[int, _Worker] = {}
        self._stopping = False

    def stop_requested(self) -> bool:
        return self._stopping

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers.values() if not w.exited.done()]

    def report_to(self, readiness: Readiness) -> None:
        """Name each worker on ``readiness`` (``/readyz``) until it listens, and while
        it is being started again."""
        for index in worker_indexes(self._settings):
            readiness.watch(f"accept worker {index}", functools.partial(self._state, index))

    def _state(self, index: int) -> str | None:
        worker = self._workers.get(index)
        if worker is None or not worker.listening:
            return "starting"
        if worker.exited.done():
            return f"exited with {worker.exited.result()}: starting again"
        return None

    async def start(self, tasks: TaskSupervisor) -> None:
        """Start every worker, return once each listens (else raise ``WorkerExited``
        with the reason), and keep a watcher on each as one of ``tasks``."""
        indexes = worker_indexes(self._settings)
        await asyncio.gather(*(self._spawn(index) for index in indexes))
        for index in indexes:
            tasks.start(f"worker-{index}", functools.partial(self._watch, index))

    async def _spawn(self, index: int) -> None:
        started = await self._processes.start(index)
        worker = _Worker(
            index,
            started.pid,
            started.command_fd,
            await _Reports.open(started.report_fd),
            self._processes.exit_of(started.pid),
        )
        old = self._workers.get(index)
        if old is not None:
            old.close()
        self._workers[index] = worker
        await self._until_listening(worker)
        _log.info("worker %d started (pid %d)", index, worker.pid)

    async def _until_listening(self, worker: _Worker) -> None:
        said = asyncio.ensure_future(worker.reports.first_line())
        try:
            async with asyncio.timeout(self._start_wait):
                line = await said
                if line == _LISTENING:
                    worker.listening = True
                    return
                if line.startswith(_FAILED):
                    reason = line.removeprefix(_FAILED).decode(errors="replace").strip()
                    raise WorkerExited(f"accept worker {worker.index} cannot start: {reason}")
                # It closed its pipe: its exit is on the way.
                code = await asyncio.shield(worker.exited)
        except TimeoutError:
            self._processes.kill(worker.pid, signal.SIGKILL)
            raise WorkerExited(
                f"accept worker {worker.index} (pid {worker.pid}) was not listening"
                f" after {self._start_wait:g} s: killed"
            ) from None
        finally:
            said.cancel()
        raise WorkerExited(
            f"accept worker {worker.index} (pid {worker.pid}) exited with {code} before it listened"
        )

    async def _watch(self, index: int) -> None:
        """Wait on worker ``index``; its exit before stop() raises, so that the task
        supervisor logs it and runs this again after its pause, which starts a new one."""
        if self.stop_requested():
            return
        worker = self._workers[index]
        if worker.exited.done():
            await self._spawn(index)
            worker = self._workers[index]
        code = await asyncio.shield(worker.exited)
        self._shares.absent(index)  # even after SIGKILL: nobody leaves it a connection
        if not self.stop_requested():
            raise WorkerExited(f"worker {index} (pid {worker.pid}) exited with {code}")

    async def counts(self) -> list[dict[str, Any]]:
        """Every running worker's counters, asked now; a worker that does not
        answer within a moment (starting, or stopped) is left out of this scrape."""
        asked = [w for w in self._workers.values() if w.listening and not w.exited.done()]
        answers = await asyncio.gather(*(w.reports.ask(w.send) for w in asked))
        return [answer for answer in answers if answer is not None]

    def reload_certificate(self) -> None:
        """Ask every worker to reload its TLS certificate (the primary got SIGHUP)."""
        for worker in self._workers.values():
            worker.send(_RELOAD)

    async def stop(self, within: float) -> None:
        """SIGTERM every worker (each drains like the primary); SIGKILL what is left
        after ``within`` seconds (what a worker's own stop may take) and a little more."""
        self._stopping = True
        live = [w for w in self._workers.values() if not w.exited.done()]
        for worker in live:
            self._processes.kill(worker.pid, signal.SIGTERM)
        exits = [asyncio.shield(w.exited) for w in live]
        try:
            async with asyncio.timeout(within + 5.0):
                await asyncio.gather(*exits)
        except TimeoutError:
            for worker in live:
                if not worker.exited.done():
                    _log.error("worker pid %d did not stop in time: killed", worker.pid)
                    self._processes.kill(worker.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await asyncio.gather(*(asyncio.shield(w.exited) for w in live))
        for worker in self._workers.values():
            worker.close()
        await self._processes.close()


class _Reports:
    """The primary's end of one worker's report pipe: the first line says it listens;
    then one question at a time, and an answer that came too late is read and dropped
    before the next question's."""

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

    async def first_line(self) -> bytes:
        """The worker's first line (``_LISTENING``), or b"" if it closed the pipe first."""
        return await self._reader.readline()

    async def ask(self, send: Callable[[bytes], None]) -> dict[str, Any] | None:
        async with self._lock:
            send(_COUNTS)
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
                _log.debug("a worker did not report its counts in time")
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
    setup: WorkerSetup,
    counts: Callable[[], dict[str, Any]],
) -> None:
    """In a worker: set ``on_gone`` when the command pipe closes (the primary is gone),
    call ``on_reload`` when the primary asks for a certificate reload on it, and write
    ``counts()`` as a line of JSON on the report pipe for each time it asks for them."""
    loop = asyncio.get_running_loop()
    fd = setup.command_fd
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
        if _COUNTS in data:
            line = json.dumps(counts()).encode() + b"\n"
            for _ in range(data.count(_COUNTS)):  # one answer per question: none is owed
                _write_all(setup.report_fd, line)

    loop.add_reader(fd, readable)


def _write_all(fd: int, data: bytes) -> None:
    """The whole line on the blocking report pipe (a few hundred bytes: the primary,
    which asked, is reading), or nothing when the primary is gone."""
    with contextlib.suppress(BrokenPipeError):
        while data:
            data = data[os.write(fd, data) :]
