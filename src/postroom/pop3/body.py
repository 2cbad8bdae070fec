"""A message on the POP3 wire: dot-stuffed (RFC 1939 3), cut for TOP, ended by ``.``.

Fed in chunks of any size (CRLF line endings, as the mailbox store reads them back);
the output does not depend on where the chunks were cut.
"""

from __future__ import annotations

__all__ = ["MessageBody"]


class MessageBody:
    def __init__(self, top: int | None = None) -> None:
        """``top``: the header and this many lines of the body (TOP); None: all."""
        self._top = top
        self._at_line_start = True
        self._line_has_text = False
        self._in_body = False
        self._body_lines = 0
        self._done = False

    @property
    def done(self) -> bool:
        """True when TOP has all it wants: the rest of the message need not be read."""
        return self._done

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        start = 0
        while start < len(chunk) and not self._done:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start : end + 1]
            start += len(piece)
            if self._at_line_start and piece.startswith(b"."):
                out += b"."
            out += piece
            self._line_has_text |= bool(piece.strip(b"\r\n"))
            if end < 0:
                self._at_line_start = False
                continue
            self._line_ended()
        return bytes(out)

    def _line_ended(self) -> None:
        if self._in_body:
            self._body_lines += 1
        elif not self._line_has_text:
            self._in_body = True  # the empty line between header and body
        self._at_line_start, self._line_has_text = True, False
        if self._top is not None and self._in_body and self._body_lines >= self._top:
            self._done = True

    def end(self) -> bytes:
        """The end of the message: a CRLF if its last line lacked one, then ``.``."""
        return (b"" if self._at_line_start else b"\r\n") + b".\r\n"
