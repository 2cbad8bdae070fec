"""Accept worker processes: forked from the primary at its start, started again as a
fresh interpreter (``workers > 1``).

A forked worker costs only the pages it writes; a fresh interpreter about 35 MiB of its
own. ``WorkerProcesses.fork`` forks every worker from the primary before the primary's
event loop, any thread or any store connection exists, once the accept path's modules
are imported and ``gc.freeze()`` has moved every object out of the collector's reach (a
collection writes to each object it looks at, and so copies its page). A forked worker
then waits, having touched nothing, until the primary has migrated the store and made
the certificate and tells it to start (``start``); if the primary closes its pipe
instead (it could not start, or is gone), it exits.

A worker that dies later is not forked again: the running primary has threads, and a
fork copies the locks they hold without the threads that would release them. It is
started as a fresh interpreter (``python -m postroom.workerentry``) that inherits only
the listening sockets, the accepting processes' shared counts (``net.shares``) and its
two pipes, and reads its setup, pickled, on its standard input. (A process kept back
to fork replacements from, a fork server, costs a third copy of every page the primary
and the worker both write after the fork, about 9 MiB, for a restart that only a crash
asks for.)

The primary hears of each worker's exit, and signals it, through a pidfd: no SIGCHLD
handler, no thread, and no signal can reach a process that took a reaped worker's pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, NoReturn

from postroom.config.settings import Settings
from postroom.net.shares import AcceptShares
from postroom.net.tls import CheckedCertificate

__all__ = [
    "StartedWorker",
    "WorkerExited",
    "WorkerMain",
    "WorkerProcesses",
    "WorkerSetup",
    "accept_shares",
    "read_setup",
    "worker_indexes",
]

_log = logging.getLogger("postroom.workers")
_START = b"S"  # the primary's first byte to a forked worker: start now
_ENTRY = (sys.executable, "-m", "postroom.workerentry")


def worker_indexes(settings: Settings) -> range:
    """The accept workers' indexes in the shares (``net.shares``): with ``workers = N``
    above 1, N workers beside the primary (index 0), which accepts only while none of
    them does; with 1, none."""
    return range(1, settings.workers + 1) if settings.workers > 1 else range(0)


def accept_shares(settings: Settings) -> AcceptShares:
    """New shares with a slot for the primary and one for each of its workers."""
    return AcceptShares(1 + len(worker_indexes(settings)))


class WorkerExited(Exception):
    """A worker process ended (or never listened) while the server was running."""


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What a worker starts from."""

    settings: Settings
    sockets: tuple[socket.socket, ...]  # listening, in the order of settings.listeners
    shares: AcceptShares  # every accepting process's count of connections
    index: int  # 1 .. workers (the primary is 0)
    command_fd: int  # the primary's requests; its end means the primary is gone
    report_fd: int  # the worker's answers
    certificate: CheckedCertificate | None  # the TLS files the primary checked, if it did


WorkerMain = Callable[[WorkerSetup], int]
"""A worker's whole life in its forked process: its exit code."""


@dataclass(frozen=True, slots=True)
class StartedWorker:
    """The primary's side of a worker process."""

    pid: int
    command_fd: int  # the write end of its command pipe (non-blocking once started)
    report_fd: int  # the read end of its report pipe


@dataclass(eq=False, slots=True)
class _Watched:
    pidfd: int
    exited: asyncio.Future[int]
    process: subprocess.Popen[bytes] | None  # a fresh interpreter's, which reaps it


class WorkerProcesses:
    """The primary's handle on its workers' processes: starts them, hears their exits."""

    def __init__(
        self,
        settings: Settings,
        sockets: Sequence[socket.socket],
        shares: AcceptShares,
        certificate: CheckedCertificate | None,
        forked: dict[int, StartedWorker],
    ) -> None:
        self._settings = settings
        self._sockets = tuple(sockets)
        self._shares = shares
        self._certificate = certificate
        self._forked = forked  # by index: forked at the primary's start, not yet started
        self._watched: dict[int, _Watched] = {}  # by pid, until it is reaped

    @classmethod
    def fork(
        cls,
        settings: Settings,
        sockets: Sequence[socket.socket],
        shares: AcceptShares,
        main: WorkerMain,
        certificate: CheckedCertificate | None = None,
    ) -> WorkerProcesses:
        """Fork workers 1 .. ``settings.workers`` now: call this before the event loop,
        any thread or any store connection exists, once the accept path is imported. In
        each worker this never returns: the process exits with ``main``'s code."""
        gc.freeze()  # shared with every fork: no collection here or there writes to them
        forked: dict[int, StartedWorker] = {}
        for index in worker_indexes(settings):
            command_read, command_write = os.pipe2(os.O_CLOEXEC)
            report_read, report_write = os.pipe2(os.O_CLOEXEC)
            pid = os.fork()
            if pid == 0:
                # The primary's ends, of this worker's pipes and of those forked before:
                # held here, they would hide the primary's exit from the worker.
                for other in (*forked.values(), StartedWorker(0, command_write, report_read)):
                    os.close(other.command_fd)
                    os.close(other.report_fd)
                setup = WorkerSetup(
                    settings, tuple(sockets), shares, index, command_read, report_write, certificate
                )
                _exit(_start_when_told(main, setup))
            os.close(command_read)
            os.close(report_write)
            forked[index] = StartedWorker(pid, command_write, report_read)
        return cls(settings, sockets, shares, certificate, forked)

    async def start(self, index: int) -> StartedWorker:
        """Start worker ``index``: the one forked at the start, the first time; a fresh
        interpreter after that."""
        forked = self._forked.pop(index, None)
        if forked is not None:
            with contextlib.suppress(BrokenPipeError):  # it died waiting: its exit tells
                os.write(forked.command_fd, _START)
            self._watch(forked.pid, None)
            started = forked
        else:
            started = await self._spawn(index)
        os.set_blocking(started.command_fd, False)  # a worker that reads nothing never stalls us
        return started

    async def _spawn(self, index: int) -> StartedWorker:
        command_read, command_write = os.pipe2(os.O_CLOEXEC)
        report_read, report_write = os.pipe2(os.O_CLOEXEC)
        fds = tuple(sock.fileno() for sock in self._sockets)
        shares = (self._shares.fd, self._shares.processes)
        setup = pickle.dumps(
            (self._settings, fds, shares, index, command_read, report_write, self._certificate)
        )
        try:
            process = await asyncio.to_thread(
                _start_interpreter, setup, (*fds, shares[0], command_read, report_write)
            )
        except BaseException:
            os.close(command_write)
            os.close(report_read)
            raise
        finally:
            os.close(command_read)  # the worker's now: their ends are how we see it gone
            os.close(report_write)
        self._watch(process.pid, process)
        return StartedWorker(process.pid, command_write, report_read)

    def _watch(self, pid: int, process: subprocess.Popen[bytes] | None) -> None:
        loop = asyncio.get_running_loop()
        watched = _Watched(os.pidfd_open(pid), loop.create_future(), process)
        self._watched[pid] = watched
        loop.add_reader(watched.pidfd, self._reap, pid)

    def _reap(self, pid: int) -> None:
        watched = self._watched.pop(pid)
        asyncio.get_running_loop().remove_reader(watched.pidfd)
        os.close(watched.pidfd)
        if watched.process is not None:
            code = watched.process.wait()
        else:
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        watched.exited.set_result(code)

    def exit_of(self, pid: int) -> asyncio.Future[int]:
        """Worker ``pid``'s exit code once it exits (``start`` returned it)."""
        return self._watched[pid].exited

    def kill(self, pid: int, signum: int) -> None:
        """Signal worker ``pid`` unless it has exited and been reaped."""
        watched = self._watched.get(pid)
        if watched is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(watched.pidfd, signum)

    async def close(self) -> None:
        """End the workers forked at the start and never started (each exits when its
        pipe closes) and reap them; call it once every started worker has exited."""
        forked, self._forked = list(self._forked.values()), {}
        for worker in forked:
            self._watch(worker.pid, None)
            os.close(worker.command_fd)
            os.close(worker.report_fd)
        exits = [asyncio.shield(self.exit_of(worker.pid)) for worker in forked]
        try:
            async with asyncio.timeout(5.0):
                await asyncio.gather(*exits)
        except TimeoutError:
            for worker in forked:
                _log.error("worker pid %d did not exit: killed", worker.pid)
                self.kill(worker.pid, signal.SIGKILL)
            await asyncio.gather(*exits)


def read_setup(source: IO[bytes]) -> WorkerSetup:
    """In a fresh worker: the setup its primary pickled on ``source`` (standard input)."""
    settings, fds, (shares_fd, processes), index, command_fd, report_fd, certificate = pickle.load(
        source
    )
    if not isinstance(settings, Settings):
        raise TypeError("not a worker setup")
    sockets = tuple(socket.socket(fileno=fd) for fd in fds)
    shares = AcceptShares(processes, shares_fd)
    return WorkerSetup(settings, sockets, shares, index, command_fd, report_fd, certificate)


def _start_interpreter(setup: bytes, pass_fds: tuple[int, ...]) -> subprocess.Popen[bytes]:
    """A fresh worker, given ``setup`` on its standard input (in a thread of its own:
    the setup may not fit the pipe before the new interpreter reads it)."""
    # SIGHUP stays blocked in the new process until it ignores it (workerentry): a reload
    # while it starts is a no-op (the start reads the files), never the default action,
    # which would end it. The mask is this thread's, and the child's.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        process = subprocess.Popen(_ENTRY, stdin=subprocess.PIPE, pass_fds=pass_fds)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    assert process.stdin is not None
    with contextlib.suppress(BrokenPipeError):  # it died at once: its exit tells
        process.stdin.write(setup)
    with contextlib.suppress(BrokenPipeError):
        process.stdin.close()
    return process


def _start_when_told(main: WorkerMain, setup: WorkerSetup) -> int:
    """A forked worker until the primary says start: the signals a terminal or a service
    manager sends every process of the server are for the primary, which stops it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGHUP stays ignored until the worker's loop handles it: a reload while starting
    # is a no-op (the start reads the files), never the default action.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if os.read(setup.command_fd, 1) != _START:
        return 0  # the primary did not start, or is gone
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return main(setup)


def _exit(code: int) -> NoReturn:
    # SystemExit, not os._exit: the interpreter ends as usual (atexit, log handlers),
    # unwinding only what the primary had entered before the fork, which holds nothing.
    raise SystemExit(code)
