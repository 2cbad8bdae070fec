"""Accept workers: extra processes that share the listening sockets (``workers > 1``).

One event loop on one core bounds how much mail one process can accept. With
``workers = N`` the primary process binds every listener and starts N - 1 workers that
accept on the same sockets; the kernel hands each new connection to one process. Every
worker commits into the same store (SQLite serialises the writers; each commit is still
fsync'ed before its 250) and wakes the primary's scheduler through ``net.wakeup``. Only
the primary delivers queued mail.

Workers are forked, not started afresh, so that they share the primary's memory: a
fresh interpreter costs about 35 MiB of its own, a forked one only the pages it writes.
The fork server (``ForkServer``) is forked from the primary before its event loop, any
thread or any store connection exists, once the accept path's modules are imported and
``gc.freeze()`` has moved every object out of the collector's reach (a collection would
write to each object it looks at, and so copy its page). It then does nothing but fork a
worker when the primary asks and tell it when one exits, so a worker started later (a
restart) is forked from that same clean state, never from the running primary.

The primary gives each worker two pipes through the fork server. On the command pipe, a
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
import gc
import json
import logging
import os
import select
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from postroom.config.settings import ListenerSettings, Settings
from postroom.net.sockets import listening_socket
from postroom.readiness import Readiness
from postroom.supervise import TaskSupervisor

__all__ = [
    "START_WAIT",
    "ForkServer",
    "Supervisor",
    "WorkerExited",
    "WorkerMain",
    "WorkerSetup",
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
_GONE = "the fork server has exited: no accept worker can be started"


class WorkerExited(Exception):
    """A worker process ended (or never listened) while the server was running."""


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What a forked worker starts from."""

    settings: Settings
    sockets: tuple[socket.socket, ...]  # listening, in the order of settings.listeners
    index: int  # 1 .. workers - 1 (the primary is 0)
    command_fd: int  # the primary's requests; its end means the primary is gone
    report_fd: int  # the worker's answers


WorkerMain = Callable[[WorkerSetup], int]
"""A worker's whole life in its forked process: its exit code."""


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
        cls, settings: Settings, sockets: Sequence[socket.socket], main: WorkerMain
    ) -> ForkServer:
        """Fork the fork server now: call this before the event loop, any thread or any
        store connection exists, once the accept path is imported. In the fork server
        and in each worker this never returns: the process exits with its code."""
        channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        gc.freeze()  # shared with every fork: no collection here or there writes to them
        pid = os.fork()
        if pid == 0:
            channel.close()
            _exit(_serve_forks(theirs, settings, tuple(sockets), main))
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
                setup = WorkerSetup(settings, sockets, int(index), *fds)
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
    exited: asyncio.Future[int | None]
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
        self, settings: Settings, forks: ForkServer, *, start_wait: float = START_WAIT
    ) -> None:
        """``start_wait``: seconds a new worker has to listen before it counts as failed."""
        self._settings = settings
        self._forks = forks
        self._start_wait = start_wait
        self._workers: dict[int, _Worker] = {}
        self._listen: asyncio.Task[None] | None = None
        self._readiness: Readiness | None = None
        self._stopping = False

    def stop_requested(self) -> bool:
        return self._stopping

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers.values() if not w.exited.done()]

    def report_to(self, readiness: Readiness) -> None:
        """Name each worker on ``readiness`` (``/readyz``) until it listens, and while
        it is being started again."""
        self._readiness = readiness
        for index in range(1, self._settings.workers):
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
        self._listen = asyncio.create_task(self._follow())
        indexes = range(1, self._settings.workers)
        await asyncio.gather(*(self._spawn(index) for index in indexes))
        for index in indexes:
            tasks.start(f"worker-{index}", functools.partial(self._watch, index))

    async def _follow(self) -> None:
        await self._forks.listen()
        if not self.stop_requested():
            reason = f"the fork server (pid {self._forks.pid}) exited: no worker can restart"
            _log.error("%s", reason)
            if self._readiness is not None:
                self._readiness.fail("accept workers", reason)

    async def _spawn(self, index: int) -> None:
        command_read, command_write = os.pipe2(os.O_CLOEXEC)
        report_read, report_write = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(command_write, False)  # a worker that reads nothing never stalls us
        try:
            pid = await self._forks.spawn(index, (command_read, report_write))
        except BaseException:
            os.close(command_write)
            os.close(report_read)
            raise
        finally:
            os.close(command_read)  # the worker's now: their ends are how we see it gone
            os.close(report_write)
        worker = _Worker(
            index, pid, command_write, await _Reports.open(report_read), self._forks.exit_of(pid)
        )
        old = self._workers.get(index)
        if old is not None:
            old.close()
        self._workers[index] = worker
        await self._until_listening(worker)
        _log.info("worker %d started (pid %d)", index, pid)

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
            self._forks.kill(worker.pid, signal.SIGKILL)
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

    async def stop(self, grace: float) -> None:
        """SIGTERM every worker (each drains like the primary); SIGKILL what is left
        after ``grace`` seconds and a little more; then end the fork server."""
        self._stopping = True
        live = [w for w in self._workers.values() if not w.exited.done()]
        for worker in live:
            self._forks.kill(worker.pid, signal.SIGTERM)
        exits = [asyncio.shield(w.exited) for w in live]
        try:
            async with asyncio.timeout(grace + 5.0):
                await asyncio.gather(*exits)
        except TimeoutError:
            for worker in live:
                if not worker.exited.done():
                    _log.error("worker pid %d did not stop in time: killed", worker.pid)
                    self._forks.kill(worker.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await asyncio.gather(*(asyncio.shield(w.exited) for w in live))
        for worker in self._workers.values():
            worker.close()
        await self._forks.close()
        if self._listen is not None:
            await self._listen


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
