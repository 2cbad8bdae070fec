"""A counting SMTP sink on loopback: a small ESMTP server that accepts every message and
records, for each recipient of each message, its Message-ID, the recipient and the
client's EHLO name, before it answers the end of data with 250 (so a message counted is
exactly a message whose delivery the sender could have seen acknowledged).

    with CountingSink() as sink:
        ...deliver to 127.0.0.1:sink.port...
        assert sink.count() == 3

Written for volume (thousands of messages from several clients at once, PIPELINING),
where a full SMTP library's per-message work shows; it speaks only what a relaying MTA
sends: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT. It runs its own event loop in a
thread, so sync and async tests use it alike.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from dataclasses import dataclass
from types import TracebackType

__all__ = ["CountingSink", "Delivery"]

_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)
_PATH = re.compile(rb"<([^>]*)>")
_EHLO = (
    b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
    b"250 ENHANCEDSTATUSCODES\r\n"
)


@dataclass(frozen=True, slots=True)
class Delivery:
    message_id: str  # the Message-ID header, with its angle brackets
    recipient: str
    helo: str  # the delivering client's EHLO name


class CountingSink:
    def __init__(self, *, data_delay: float = 0.0) -> None:
        # How long each end of data takes to be answered: deliveries stay in flight a
        # while, as they do to a real server on another host.
        self._data_delay = data_delay
        self.port = 0
        self._deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._answering: Counter[str] = Counter()  # EHLO name -> ends of data being answered

    # -- what was received (from any thread) ----------------------------------------------
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def count(self) -> int:
        with self._lock:
            return len(self._deliveries)

    def answering(self, helo: str) -> int:
        """Messages from client ``helo`` whose end of data is being answered now (whose
        sender is waiting for the 250): deliveries in flight."""
        with self._lock:
            return self._answering[helo]

    def copies(self) -> Counter[tuple[str, str]]:
        """How often each (Message-ID, recipient) arrived."""
        return Counter((d.message_id, d.recipient) for d in self.deliveries())

    # -- life --------------------------------------------------------------------------------
    def start(self) -> CountingSink:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> CountingSink:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0, backlog=512)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()

    # -- one SMTP session ---------------------------------------------------------------------
    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._converse(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away mid-session: nothing of it is counted
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink.test ESMTP\r\n")
        helo = ""
        recipients: list[str] = []
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                helo = line[5:].strip().decode("ascii", "replace")
                recipients = []
                writer.write(_EHLO if verb == b"EHLO" else b"250 sink.test\r\n")
            elif verb == b"MAIL":
                recipients = []
                writer.write(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                found = _PATH.search(line)
                recipients.append(found.group(1).decode() if found else "")
                writer.write(b"250 2.1.5 Ok\r\n")
            elif verb == b"DATA":
                if not recipients:
                    writer.write(b"554 5.5.1 No valid recipients\r\n")
                    continue
                await writer.drain()  # the 354 goes out before the content is read
                writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                content = await self._content(reader)
                if self._data_delay:
                    with self._lock:
                        self._answering[helo] += 1
                    try:
                        await asyncio.sleep(self._data_delay)
                    finally:
                        with self._lock:
                            self._answering[helo] -= 1
                found = _MESSAGE_ID.search(content)
                message_id = found.group(1).decode() if found else ""
                with self._lock:
                    self._deliveries.extend(Delivery(message_id, r, helo) for r in recipients)
                recipients = []
                writer.write(b"250 2.0.0 Ok: counted\r\n")
            elif verb == b"RSET":
                recipients = []
                writer.write(b"250 2.0.0 Ok\r\n")
            elif verb == b"NOOP":
                writer.write(b"250 2.0.0 Ok\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"502 5.5.2 Command not recognized\r\n")
            await writer.drain()

    @staticmethod
    async def _content(reader: asyncio.StreamReader) -> bytes:
        """The message up to the lone dot (dot-stuffing is not undone: not needed here)."""
        lines: list[bytes] = []
        while True:
            line = await reader.readline()
            if not line:
                raise asyncio.IncompleteReadError(b"", None)
            if line == b".\r\n":
                return b"".join(lines)
            lines.append(line)
