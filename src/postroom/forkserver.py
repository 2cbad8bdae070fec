"""The fork server: the process accept workers are forked from (``workers > 1``).

A fresh interpreter costs an accept worker about 35 MiB of its own; a forked one only
the pages it writes. ``ForkServer.start`` forks this process from the primary before
the primary's event loop, any thread or any store connection exists, once the accept
path's modules are imported and ``gc.freeze()`` has moved every object out of the
collector's reach (a collection writes to each object it looks at, and so copies its
page). It then does nothing but fork a worker when the primary asks, signal one when
asked, and tell the primary each worker's pid and exit code over a Unix socket pair, so
a worker started later (a restart) is forked from that same clean state, never from the
running primary. It ignores the signals a terminal or a service manager sends the whole
server (the primary stops the workers) and exits when the primary closes its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import select
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from postroom.config.settings import Settings
from postroom.net.shares import AcceptShares

__all__ = ["ForkServer", "WorkerExited", "WorkerMain", "WorkerSetup"]

_log = logging.getLogger("postroom.forkserver")
_GONE = "the fork server has exited: no accept worker can be started"


class WorkerExited(Exception):
    """A worker process ended (or never listened) while the server was running."""


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What a forked worker starts from."""

    settings: Settings
    sockets: tuple[socket.socket, ...]  # listening, in the order of settings.listeners
    shares: AcceptShares  # every accepting process's count of connections
    index: int  # 1 .. workers - 1 (the primary is 0)
    command_fd: int  # the primary's requests; its end means the primary is gone
    report_fd: int  # the worker's answers


WorkerMain = Callable[[WorkerSetup], int]
"""A worker's whole life in its forked process: its exit code."""


class ForkServer:
    """The primary's handle on its fork server: asks it for workers, hears their exits."""

    def __init__(self, pid: int, channel: socket.socket) -> None:
        self.pid = pid
        self._channel = channel
        self._started: dict[int, asyncio.Future[int]] = {}  # by worker index
        self._exits: dict[int, asyncio.Future[int | None]] = {}  # by pid
        self.gone = False  # the fork server exited: no worker can be started now
        self._listening = False

    @classmethod
    def start(
        cls,
        settings: Settings,
        sockets: Sequence[socket.socket],
        shares: AcceptShares,
        main: WorkerMain,
    ) -> ForkServer:
        """Fork the fork server now: call this before the event loop, any thread or any
        store connection exists, once the accept path is imported. In the fork server
        and in each worker this never returns: the process exits with its code."""
        channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        gc.freeze()  # shared with every fork: no collection here or there writes to them
        pid = os.fork()
        if pid == 0:
            channel.close()
            _exit(_serve_forks(theirs, settings, tuple(sockets), shares, main))
        theirs.close()
        channel.setblocking(False)
        return cls(pid, channel)

    async def spawn(self, index: int, fds: tuple[int, int]) -> int:
        """Fork worker ``index`` with its (command, report) pipe ends; its pid."""
        if self.gone:
            raise WorkerExited(_GONE)
        started = self._started[index] = asyncio.get_running_loop().create_future()
        try:
            socket.send_fds(self._channel, [b"spawn %d" % index], list(fds))
        except OSError:
            raise WorkerExited(_GONE) from None
        pid: int = await started
        return pid

    def exit_of(self, pid: int) -> asyncio.Future[int | None]:
        """Worker ``pid``'s exit code once it exits (None: unknown, the fork server is gone)."""
        if pid not in self._exits:
            self._exits[pid] = asyncio.get_running_loop().create_future()
        return self._exits[pid]

    def kill(self, pid: int, signum: int) -> None:
        """Signal worker ``pid`` unless it has exited (the fork server, which reaps it,
        knows; a signal sent here could reach a new process given the old pid)."""
        with contextlib.suppress(OSError):
            self._channel.send(b"kill %d %d" % (pid, signum))

    async def listen(self) -> None:
        """Read the fork server's news until it exits (at stop, or by accident)."""
        loop = asyncio.get_running_loop()
        self._listening = True
        while message := await _receive(loop, self._channel):
            match message.split():
                case [b"started", index, pid]:
                    started = self._started.pop(int(index), None)
                    if started is not None and not started.done():
                        started.set_result(int(pid))
                case [b"exited", pid, code] if not self.exit_of(int(pid)).done():
                    self._exits[int(pid)].set_result(int(code))
        self.gone = True
        self._channel.close()
        for started in self._started.values():
            if not started.done():
                started.set_exception(WorkerExited(_GONE))
        for exited in self._exits.values():
            if not exited.done():  # its parent is gone: no one will say
                exited.set_result(None)

    async def close(self) -> None:
        """End the fork server (it exits when its channel closes) and reap it; ``listen``
        then ends too."""
        with contextlib.suppress(OSError):
            self._channel.shutdown(socket.SHUT_RDWR)
        if not self._listening:
            self._channel.close()
        reaped = asyncio.ensure_future(asyncio.to_thread(os.waitpid, self.pid, 0))
        try:
            async with asyncio.timeout(5.0):
                await asyncio.shield(reaped)
        except TimeoutError:
            _log.error("the fork server (pid %d) did not exit: killed", self.pid)
            os.kill(self.pid, signal.SIGKILL)
            await reaped


async def _receive(loop: asyncio.AbstractEventLoop, channel: socket.socket) -> bytes:
    """The next message on ``channel``; b"" when its other end is gone."""
    try:
        return await loop.sock_recv(channel, 256)
    except OSError:
        return b""


def _exit(code: int) -> NoReturn:
    # SystemExit, not os._exit: the interpreter ends as usual (atexit, log handlers),
    # unwinding only what the primary had entered before the fork, which holds nothing.
    raise SystemExit(code)


def _serve_forks(
    channel: socket.socket,
    settings: Settings,
    sockets: tuple[socket.socket, ...],
    shares: AcceptShares,
    main: WorkerMain,
) -> int:
    """The fork server's loop: fork a worker for each ``spawn``, signal a live one for
    each ``kill``, report each exit; end when the primary closes the channel."""
    # The primary stops the workers; the signals a terminal or a service manager sends
    # to every process of the server are not for this one.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    woken, wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake)
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)  # wakes the select
    children: dict[int, int] = {}  # pid -> worker index
    while True:
        readable, _, _ = select.select([channel.fileno(), woken], [], [])
        if woken in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(woken, 512)
            _reap(channel, children)
        if channel.fileno() not in readable:
            continue
        message, fds, _, _ = socket.recv_fds(channel, 256, 2)
        if not message:
            return 0
        match message.split():
            case [b"spawn", index] if len(fds) == 2:
                own = (channel.fileno(), woken, wake)
                setup = WorkerSetup(settings, sockets, shares, int(index), *fds)
                pid = _fork_worker(main, setup, own)
                children[pid] = setup.index
                channel.send(b"started %d %d" % (setup.index, pid))
            case [b"kill", pid, number] if int(pid) in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), int(number))
        for fd in fds:
            os.close(fd)


def _fork_worker(main: WorkerMain, setup: WorkerSetup, own: tuple[int, ...]) -> int:
    """Fork a worker that runs ``main(setup)``, without the fork server's ``own`` fds
    and with the signals back as a fresh process has them; its pid."""
    gc.freeze()  # what this process made since the primary froze, too
    pid = os.fork()
    if pid != 0:
        return pid
    for fd in own:
        os.close(fd)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # SIGHUP stays ignored until the worker's loop handles it: a reload while starting
    # is a no-op (the start reads the files), never the default action.
    _exit(main(setup))


def _reap(channel: socket.socket, children: dict[int, int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.pop(pid, None)
        code = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(OSError):
            channel.send(b"exited %d %d" % (pid, code))
