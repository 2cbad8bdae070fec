"""One SQLite writer for the primary and its accept workers (``workers > 1``).

Two processes that each commit into one SQLite file take turns at its write lock (lock
calls, waits) and each commit empties the other's page cache (pages read again). So an
accept worker does not write the messages it accepts, nor the outcomes of the local
mail it delivers at once: it hands their rows to the primary over a Unix socket in the
data directory (``WritePort``), and the primary's group commit puts them in the same
transaction, and the same fsync, as its own. The worker answers 250 only once the
primary has answered that the commit is durable; if the primary cannot be reached, or
goes away before it answers, the message fails with ``StoreUnavailable`` (451 4.3.0:
the client tries again), and the next message connects anew. So does a primary that
does not answer within a deadline (stopped, or stuck): the client is never held, and if
the primary commits later, the client's retry makes a second copy, as with any MTA that
loses a 250 on its way.

Only new messages with their body in memory and delivery outcomes go this way (an
outcome the primary cannot take is recorded on the worker's own connection instead:
its mail is in the Maildir already); a worker's other writes (spooled bodies,
recipients released to the scheduler, login throttling) keep its own connection.
Reads stay local.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Protocol, cast

from postroom.errors import StoreError, StoreUnavailable
from postroom.store.sqlite.writewire import (
    Frames,
    Outcome,
    Rows,
    WireError,
    read_reply,
    read_request,
)
from postroom.store.sqlite.writewire import reply as reply_frame
from postroom.store.sqlite.writewire import request as request_frame

__all__ = ["RowsStore", "SharedWriter", "WritePort", "socket_path"]

_NAME = "write.sock"
_ADDRESS_BYTES = 108  # sun_path, with its final NUL
_log = logging.getLogger("postroom.store")
_GONE = "the primary process's writer went away before it answered"
# How long a worker's message waits for the primary's answer: a stopped or stuck primary
# must not hold the client (then 451, as when it is gone). Twice the store's busy
# timeout: the longest the primary's commit may wait for the file's lock, and room.
_DEADLINE = 10.0


def socket_path(data_dir: Path) -> Path | None:
    """The socket's path, or None where it would not fit a socket address (a long data
    directory path): then each process commits its own messages, as they all agree."""
    path = data_dir.absolute() / _NAME
    return path if len(os.fsencode(path)) < _ADDRESS_BYTES else None


class SharedWriter:
    """An accept worker's end: ``await write(rows)`` returns once the primary has
    committed them. The writes given during one turn of the event loop go as one
    request."""

    def __init__(self, path: Path, *, deadline: float = _DEADLINE) -> None:
        self._path = os.fspath(path)
        self._deadline = deadline
        self._pending: list[tuple[Rows, asyncio.Future[None]]] | None = None
        self._unsent: list[list[tuple[Rows, asyncio.Future[None]]]] = []
        self._waiting: dict[int, list[asyncio.Future[None]]] = {}
        self._batches = 0
        self._transport: asyncio.Transport | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._closed = False

    async def write(self, rows: Rows) -> None:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if self._pending is None:
            self._pending = []
            loop.call_soon(self._flush)
        self._pending.append((rows, future))
        try:
            async with asyncio.timeout(self._deadline):
                await future  # on timeout the future is cancelled: a late answer is dropped
        except TimeoutError:
            reason = f"the primary process's writer did not answer within {self._deadline:g} s"
            _log.warning("%s: a write failed, not known to be committed", reason)
            raise StoreUnavailable(reason) from None

    def _flush(self) -> None:
        batch, self._pending = self._pending, None
        if not batch:
            return
        if self._transport is not None:
            self._send(self._transport, batch)
            return
        self._unsent.append(batch)
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_unix_connection(lambda: _WorkerSide(self), self._path)
        except OSError as exc:
            reason = f"the primary process's writer is unreachable: {exc.strerror or exc}"
            self._fail(self._unsent, reason)
            return
        except BaseException:  # cancelled, or a bug: never leave a sender waiting
            self._fail(self._unsent, "the primary process's writer could not be reached")
            raise
        finally:
            self._connecting = None
        unsent, self._unsent = self._unsent, []
        if self._closed:
            transport.close()
            self._fail(unsent, "the store is closed")
            return
        self._transport = transport
        for batch in unsent:
            self._send(transport, batch)

    def _send(
        self, transport: asyncio.Transport, batch: list[tuple[Rows, asyncio.Future[None]]]
    ) -> None:
        try:
            frame = request_frame(self._batches, [rows for rows, _ in batch])
        except ValueError as exc:  # a value marshal cannot write: a bug, failed loudly
            self._fail([batch], f"rows that cannot be sent: {exc}")
            return
        self._waiting[self._batches] = [future for _, future in batch]
        self._batches += 1
        transport.write(frame)

    def _answered(self, batch: int, outcomes: list[Outcome]) -> None:
        futures = self._waiting.pop(batch, None)
        if futures is None or len(futures) != len(outcomes):
            raise WireError(f"an answer to batch {batch}, which was not asked as such")
        for future, error in zip(futures, outcomes, strict=True):
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    def _lost(self, transport: asyncio.BaseTransport, reason: str) -> None:
        if self._transport is transport:
            self._transport = None
        waiting, self._waiting = self._waiting, {}
        unanswered = sum(len(futures) for futures in waiting.values())
        if unanswered:
            _log.warning("%s: %d write(s) failed, not known to be committed", reason, unanswered)
        for futures in waiting.values():
            for future in futures:
                if not future.done():
                    future.set_exception(StoreUnavailable(reason))

    @staticmethod
    def _fail(batches: list[list[tuple[Rows, asyncio.Future[None]]]], reason: str) -> None:
        for batch in batches:
            for _, future in batch:
                if not future.done():
                    future.set_exception(StoreUnavailable(reason))
        batches.clear()

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self._transport is not None:
            transport = self._transport
            transport.close()
            self._lost(transport, "the store is closed")


class _Framed(asyncio.Protocol):
    """One end of a connection: each frame's value to ``_take``; nonsense hangs up."""

    _nonsense = ""

    def __init__(self) -> None:
        self._frames = Frames()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's: not a subclass

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        try:
            for value in self._frames.feed(data):
                self._take(self._transport, value)
        except WireError as exc:
            _log.error("%s: %s", self._nonsense, exc)
            self._transport.abort()

    def _take(self, transport: asyncio.Transport, value: object) -> None:
        raise NotImplementedError


class _WorkerSide(_Framed):
    _nonsense = "the primary's writer answered nonsense"

    def __init__(self, writer: SharedWriter) -> None:
        super().__init__()
        self._writer = writer

    def _take(self, transport: asyncio.Transport, value: object) -> None:
        self._writer._answered(*read_reply(value))

    def connection_lost(self, exc: Exception | None) -> None:
        assert self._transport is not None
        self._writer._lost(self._transport, _GONE)


class RowsStore(Protocol):
    """What the primary's end commits into (``SqliteStore``)."""

    def write_rows_soon(self, rows: Rows) -> asyncio.Future[None]: ...

    def storage_error(self, exc: BaseException) -> StoreError | None: ...


class WritePort:
    """The primary's end: commits the rows its accept workers send (the store's group
    commit) and answers each request once all of it is settled. A request is handed to
    the group commit as it is read and answered from the commit's callbacks, with no
    task of its own: each turn of the primary's busy event loop would add to the
    worker's wait for its 250."""

    def __init__(self, path: Path, store: RowsStore) -> None:
        self._path = path
        self._store = store
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Transport] = set()
        self._unsettled: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        """Listen; OSError when the socket cannot be bound (the workers then cannot
        accept mail, so the caller fails the start)."""
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()  # left by a server that was killed
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(
            lambda: _PrimarySide(self), os.fspath(self._path)
        )
        os.chmod(self._path, 0o600)

    def _received(self, transport: asyncio.Transport, batch: int, rows: list[Rows]) -> None:
        try:
            futures = [self._store.write_rows_soon(r) for r in rows]
        except StoreError as exc:  # closed: nothing was submitted
            if not transport.is_closing():
                transport.write(reply_frame(batch, [exc] * len(rows)))
            return
        left = len(futures)

        def settled(future: asyncio.Future[None]) -> None:
            nonlocal left
            self._unsettled.discard(future)
            left -= 1
            if left == 0 and not transport.is_closing():
                transport.write(reply_frame(batch, [self._outcome(f) for f in futures]))

        for future in futures:
            self._unsettled.add(future)
            future.add_done_callback(settled)

    def _outcome(self, future: asyncio.Future[None]) -> Outcome:
        exc = future.exception()
        if exc is None:
            return None
        error = self._store.storage_error(exc)
        if error is None:
            _log.error("a worker's write could not be committed: %r", exc)
            return StoreUnavailable(f"storage failed: {exc}")
        return error

    async def aclose(self) -> None:
        """Stop listening, let the commits under way finish and answer, then hang up."""
        if self._server is None:
            return
        self._server.close()
        if self._unsettled:  # their answers are written before this gather returns
            await asyncio.gather(*self._unsettled, return_exceptions=True)
        for transport in list(self._connections):
            transport.close()
        await self._server.wait_closed()
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()


class _PrimarySide(_Framed):
    _nonsense = "an accept worker sent nonsense to the writer"

    def __init__(self, port: WritePort) -> None:
        super().__init__()
        self._port = port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self._transport is not None
        self._port._connections.add(self._transport)

    def _take(self, transport: asyncio.Transport, value: object) -> None:
        self._port._received(transport, *read_request(value))

    def connection_lost(self, exc: Exception | None) -> None:
        assert self._transport is not None
        self._port._connections.discard(self._transport)
