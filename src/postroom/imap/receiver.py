"""Framing of IMAP commands: lines and the literals they announce, with every size
bounded before a byte of it is kept.

``CommandReader.feed(data)`` takes what arrived; ``next()`` gives, in order:

- ``Continue``: a synchronizing literal ``{n}`` within the limits was announced; the
  driver sends a continuation request (``+``) before the client sends its bytes;
- ``Framed``: one whole command, as text lines and literals (for ``tokens.tokenize``),
  with its tag and name when they could be read;
- ``TooBig``: a line or literal over its limit. A synchronizing literal is refused before
  the client sends it (the client then drops the command); a line that is too long, or a
  non-synchronizing literal ``{n+}`` that is too big, is read to its end and thrown away
  without being kept, so the next command is framed correctly;
- ``Line``: in line mode (an AUTHENTICATE response, IDLE's DONE), one line;
- None: more bytes are needed.

A literal's size is checked against ``max_literal``, or ``max_append`` for APPEND (the
message), when its ``{n}`` is read; a line against ``max_line`` as it grows; the whole
command (lines and literals, APPEND's message aside) against ``max_command``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from postroom.imap.tokens import Literal

__all__ = ["CommandReader", "Continue", "Framed", "Line", "TooBig"]

_LITERAL_MARK: Final = re.compile(rb"~?\{(\d{1,20})(\+?)\}\Z")
_TAG_AND_NAME: Final = re.compile(
    rb"([\x21\x23\x24\x26\x27\x2c-\x5b\x5d-\x7a\x7c-\x7e]+) ([A-Za-z]+)(?: ([A-Za-z]+))?"
)  # a tag: ASTRING-CHARs but "+" (RFC 3501 9)


@dataclass(frozen=True, slots=True)
class Continue:
    tag: str | None
    name: str  # the command waiting for its literal


@dataclass(frozen=True, slots=True)
class Framed:
    tag: str | None
    name: str  # upper-cased; "UID FETCH" style for UID commands; "" when unreadable
    pieces: list[bytes | Literal] = field(repr=False)


@dataclass(frozen=True, slots=True)
class TooBig:
    tag: str | None
    what: str  # "line" or "literal"
    fatal: bool = False  # the stream cannot be framed any more: end the connection


@dataclass(frozen=True, slots=True)
class Line:
    data: bytes


Framing = Continue | Framed | TooBig | Line


class CommandReader:
    def __init__(
        self, *, max_line: int, max_literal: int, max_append: int, max_command: int
    ) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_append = max_append
        self.max_command = max_command
        self.line_mode = False  # the next line is not a command (AUTHENTICATE, IDLE)
        self._buffer = bytearray()
        self._pieces: list[bytes | Literal] = []
        self._size = 0  # bytes of this command kept so far
        self._literal_left = 0  # bytes of the current literal still to come
        self._literal = bytearray()
        self._discarding = False  # this command is refused: frame it, keep nothing
        self._head: tuple[str | None, str] | None = None  # tag and name of this command
        self._skip_line = False  # dropping a too long line up to its LF
        self._pending: list[Framing] = []

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def abandon(self) -> None:
        """The command waiting for a synchronizing literal is refused instead of given
        "+": the client sends no literal and drops the command (RFC 3501 7.5)."""
        self._reset()

    def discard_buffered(self) -> None:
        """Forget everything received and not yet framed (STARTTLS: bytes pipelined
        behind it must never be read as if they came over TLS)."""
        self._buffer.clear()
        self._reset()
        self._skip_line = False
        self._pending.clear()

    @property
    def in_command(self) -> bool:
        return bool(self._pieces) or self._literal_left > 0 or bool(self._buffer)

    def next(self) -> Framing | None:
        while not self._pending:
            if not self._step():
                return None
        return self._pending.pop(0)

    def _reset(self) -> None:
        self._pieces = []
        self._size = 0
        self._literal_left = 0
        self._literal = bytearray()
        self._discarding = False
        self._head = None

    def _step(self) -> bool:
        """Frame what the buffer allows; False when more bytes are needed."""
        buffer = self._buffer
        if self._literal_left:
            return self._step_literal()
        end = buffer.find(b"\n")
        if self._skip_line:
            return self._step_skip(end)
        if end < 0:
            if len(buffer) > self.max_line:
                self._head = self._head or self._head_of(bytes(buffer[:256]))
                buffer.clear()
                self._skip_line = True
            return False
        if end + 1 > self.max_line:
            self._head = self._head or self._head_of(bytes(buffer[:256]))
            del buffer[: end + 1]
            self._finish_refused("line")
            return True
        line = bytes(buffer[:end])
        del buffer[: end + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        if self.line_mode and not self._pieces:
            self._pending.append(Line(line))
            return True
        self._take_line(line)
        return True

    def _step_literal(self) -> bool:
        buffer = self._buffer
        if not buffer:
            return False
        take = min(self._literal_left, len(buffer))
        if not self._discarding:
            self._literal += buffer[:take]
        del buffer[:take]
        self._literal_left -= take
        if self._literal_left == 0:
            if not self._discarding:
                self._pieces.append(Literal(bytes(self._literal)))
            self._literal = bytearray()
        return True

    def _step_skip(self, end: int) -> bool:
        """Drop a too long line up to its LF, then refuse its command."""
        if end < 0:
            self._buffer.clear()
            return False
        del self._buffer[: end + 1]
        self._skip_line = False
        self._finish_refused("line")
        return True

    def _head_of(self, line: bytes) -> tuple[str | None, str]:
        if self._head is not None:
            return self._head
        match = _TAG_AND_NAME.match(line)
        if match is None:
            first = line.split(b" ", 1)[0]
            ok = first and _TAG_AND_NAME.match(first + b" X")
            return (first.decode("ascii") if ok else None), ""
        tag, name = match.group(1).decode("ascii"), match.group(2).decode("ascii").upper()
        if name == "UID" and match.group(3):
            name = f"UID {match.group(3).decode('ascii').upper()}"
        return tag, name

    def _take_line(self, line: bytes) -> None:
        if self._head is None:
            self._head = self._head_of(line)
        self._size += len(line) + 2
        mark = _LITERAL_MARK.search(line)
        if mark is None:
            self._pieces.append(line)
            self._complete()
            return
        size, non_sync = int(mark.group(1)), bool(mark.group(2))
        limit = self.max_append if self._head[1] == "APPEND" else self.max_literal
        counted = 0 if self._head[1] == "APPEND" else size  # the message has its own limit
        if self._discarding or size > limit or self._size + counted > self.max_command:
            if not non_sync:
                # the client waits for "+" and, refused, drops the rest of the command
                self._finish_refused("literal")
                return
            self._discarding = True  # the client sends it anyway: read past it, keep none
        self._size += counted
        self._pieces.append(line[: mark.start()])
        self._literal_left = size
        if size == 0:
            self._pieces.append(Literal(b""))
        if not non_sync and not self._discarding:
            self._pending.append(Continue(*self._head))

    def _complete(self) -> None:
        if self._discarding:
            self._finish_refused("literal")
            return
        assert self._head is not None
        tag, name = self._head
        if self._size > self.max_command:
            self._finish_refused("line")
            return
        self._pending.append(Framed(tag, name, self._pieces))
        self._reset()

    def _finish_refused(self, what: str) -> None:
        tag = (self._head or (None, ""))[0]
        self._pending.append(TooBig(tag, what))
        self._reset()
