"""Incremental framing of what the peer sends: command lines, DATA, BDAT chunks.

All bytes live in one ``bytearray``; consumed prefixes are deleted in one step (CPython
deletes a bytearray prefix without copying the rest), and searches start where the
previous search stopped, so feeding a line one byte at a time is not quadratic.

DATA (RFC 5321 4.1.1.4, 4.5.2) ends only at ``<CRLF>.<CRLF>``; the CRLF that ended the
DATA command counts as the one before the dot, so a message may be empty. Any other
combination of CR, LF and "." (``<LF>.<LF>``, ``<CR>.<CR>``, ``<CRLF>.<LF>``, ...) is
message content, and a message with a bare CR, a bare LF or a NUL anywhere is refused
at its real end (``554 5.6.0``): those are the SMTP smuggling vectors, and RFC 5321 2.3.8
forbids them. Content is emitted in large pieces (everything decidable in the buffer),
never line by line.
"""

from __future__ import annotations

from enum import Enum
from typing import Final

from postroom.smtp import replies
from postroom.smtp.replies import Reply

__all__ = [
    "TOO_LONG",
    "BdatReader",
    "DataReader",
    "LineEndings",
    "MessageBody",
    "ReceiveBuffer",
    "TooLong",
]

_LINE_DOT: Final = b"\r\n."
_CR: Final = 0x0D
_DOT: Final = 0x2E


class TooLong(Enum):
    TOO_LONG = "TOO_LONG"


TOO_LONG: Final = TooLong.TOO_LONG


class ReceiveBuffer:
    """The bytes received and not yet consumed, and command-line framing over them."""

    __slots__ = ("_discarding", "_searched", "data", "eof")

    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = False
        self._searched = 0  # no LF before this offset
        self._discarding = False  # inside an overlong line: drop bytes up to its LF

    def __len__(self) -> int:
        return len(self.data)

    def feed(self, data: bytes) -> None:
        if data:
            self.data += data
        else:
            self.eof = True

    def clear(self) -> None:
        """Forget every buffered byte (RFC 3207 4.2: nothing sent before TLS may count)."""
        self.data.clear()
        self._searched = 0
        self._discarding = False

    def consume(self, n: int) -> None:
        del self.data[:n]
        self._searched = 0

    def read_line(self, limit: int) -> bytes | TooLong | None:
        """The next line without its CRLF (or bare LF); None when it is not complete yet.

        ``limit`` counts the line with its terminator (RFC 5321 4.5.3.1.4). An overlong
        line is reported once, as soon as it is known, and the rest of it up to its LF
        is then discarded unseen, so the peer's next command is read normally.
        """
        data = self.data
        if self._discarding:
            end = data.find(b"\n", self._searched)
            if end < 0:
                data.clear()
                self._searched = 0
                return None
            self._discarding = False
            self.consume(end + 1)
        end = data.find(b"\n", self._searched, limit)
        if end < 0:
            if len(data) >= limit:  # the LF, if it ever comes, is past the limit
                self._discarding = True
                self.consume(limit)
                return TOO_LONG
            self._searched = len(data)
            return None
        line = bytes(data[: end - 1 if end and data[end - 1] == _CR else end])
        self.consume(end + 1)
        return line

    def take(self, n: int) -> bytes:
        """Up to ``n`` bytes from the front of the buffer, consumed."""
        data = self.data
        if n >= len(data):
            out = bytes(data)
            data.clear()
        else:
            with memoryview(data) as view:
                out = bytes(view[:n])
            del data[:n]
        self._searched = 0
        return out


class LineEndings:
    """Checks that every CR and LF of a byte stream fed in pieces is part of a CRLF and
    that there is no NUL (RFC 5321 2.3.8; RFC 6152 for 8BITMIME). Counting is done in C:
    a piece is clean when its CR count and LF count both equal its CRLF count, allowing
    for a CRLF split across two pieces."""

    __slots__ = ("_cr_pending", "clean")

    def __init__(self) -> None:
        self.clean = True
        self._cr_pending = False  # the previous piece ended with CR

    def feed(self, data: bytes | bytearray, start: int = 0, end: int | None = None) -> bool:
        """Check ``data[start:end]``, the next piece of the stream (searched in place)."""
        end = len(data) if end is None else end
        if not self.clean or start >= end:
            return self.clean
        lead_lf = self._cr_pending and data[start] == 0x0A
        if self._cr_pending and not lead_lf:
            self.clean = False
            return False
        trailing_cr = data[end - 1] == _CR
        crlf = data.count(b"\r\n", start, end)
        self.clean = (
            data.count(b"\r", start, end) - trailing_cr == crlf
            and data.count(b"\n", start, end) - lead_lf == crlf
            and data.find(b"\0", start, end) < 0
        )
        self._cr_pending = trailing_cr
        return self.clean

    def finish(self) -> bool:
        """True when the stream ended clean (not on a lone CR)."""
        if self._cr_pending:
            self.clean = False
        return self.clean


class MessageBody:
    """What the core tracks of one message while it arrives: its size and its problem."""

    __slots__ = ("_endings", "max_size", "problem", "size")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.size = 0
        self.problem: Reply | None = None
        self._endings = LineEndings()

    def add(self, raw: bytes | bytearray, start: int, end: int, content_size: int) -> bool:
        """Account for a piece; True when its content should still be passed on.

        Past the maximum size (RFC 1870 6.3: 552) or after a bad line ending, the rest of
        the message is read and dropped, and the problem is the reply at its end.
        """
        self.size += content_size
        if self.problem is not None:
            return False
        if not self._endings.feed(raw, start, end):
            self.problem = replies.BAD_LINE_ENDINGS
        elif self.size > self.max_size:
            self.problem = replies.MESSAGE_TOO_BIG
        return self.problem is None

    def finish(self) -> Reply | None:
        if self.problem is None and not self._endings.finish():
            self.problem = replies.BAD_LINE_ENDINGS
        return self.problem


class _Dot(Enum):
    END = "end"  # ".\r\n": end of data
    UNSTUFF = "unstuff"  # "." then anything else: drop the dot (RFC 5321 4.5.2)
    MORE = "more"  # cannot tell yet


def _after_dot(data: bytearray, i: int) -> _Dot:
    """What the "." just before offset ``i``, at the start of a line, means."""
    left = len(data) - i
    if left >= 2:
        return _Dot.END if data[i] == _CR and data[i + 1] == 0x0A else _Dot.UNSTUFF
    if left == 1 and data[i] != _CR:
        return _Dot.UNSTUFF
    return _Dot.MORE


def _scan(data: bytearray, pos: int) -> tuple[list[tuple[int, int]], int, bool]:
    """Spans of content from ``pos``, how far the raw bytes are decided, and whether the
    end marker follows them. A trailing CR or CRLF is held back: it may begin the marker.
    One ``find`` per line that starts with a dot, and one for the rest."""
    spans: list[tuple[int, int]] = []
    while True:
        i = data.find(_LINE_DOT, pos)
        if i < 0:
            end = len(data)
            if data.endswith(b"\r\n"):
                end -= 2
            elif data.endswith(b"\r"):
                end -= 1
            end = max(end, pos)
            spans.append((pos, end))
            return spans, end, False
        verdict = _after_dot(data, i + 3)
        if verdict is _Dot.MORE:
            spans.append((pos, i))
            return spans, i, False
        spans.append((pos, i + 2))  # the CRLF belongs to the line before the dot
        if verdict is _Dot.END:
            return spans, i + 2, True
        pos = i + 3


class DataReader:
    """The message after ``354``: dot-unstuffed content until ``<CRLF>.<CRLF>``."""

    __slots__ = ("_first", "body", "ended")

    def __init__(self, max_size: int) -> None:
        self.body = MessageBody(max_size)
        self.ended = False
        self._first = True  # at the first line: the DATA command's CRLF precedes it

    def read(self, buffer: ReceiveBuffer) -> bytes:
        """Consume what can be decided; return the content to pass on (maybe empty)."""
        if self.ended:
            return b""
        data = buffer.data
        start = 0
        if self._first:
            if not data:
                return b""
            verdict = _after_dot(data, 1) if data[0] == _DOT else None
            if verdict is _Dot.MORE:
                return b""
            self._first = False
            if verdict is _Dot.END:
                buffer.consume(3)
                self._end()
                return b""
            if verdict is _Dot.UNSTUFF:
                start = 1
        spans, consumed, ended = _scan(data, start)
        content = b""
        if self.body.add(data, 0, consumed, sum(b - a for a, b in spans)):
            with memoryview(data) as view:
                content = b"".join([view[a:b] for a, b in spans])
        buffer.consume(consumed + (3 if ended else 0))
        if ended:
            self._end()
        return content

    def _end(self) -> None:
        self.ended = True
        self.body.finish()


class BdatReader:
    """One BDAT chunk (RFC 3030 2): exactly ``remaining`` octets, no framing inside.

    ``body`` is None when the chunk is refused: its octets are read and dropped, so the
    peer's next command is still found where it should be.
    """

    __slots__ = ("body", "last", "remaining", "size")

    def __init__(self, size: int, *, last: bool, body: MessageBody | None) -> None:
        self.size = size
        self.remaining = size
        self.last = last
        self.body = body

    @property
    def done(self) -> bool:
        return self.remaining == 0

    def read(self, buffer: ReceiveBuffer) -> bytes:
        n = min(self.remaining, len(buffer))
        if n == 0:
            return b""
        self.remaining -= n
        if self.body is None or self.body.problem is not None:
            buffer.consume(n)
            if self.body is not None:
                self.body.size += n
            return b""
        chunk = buffer.take(n)
        return chunk if self.body.add(chunk, 0, n, n) else b""
