"""A stored message read back as RFC 5322 octets: CRLF line endings, in chunks.

Maildir files have LF line endings (the convention, and what the local mailer writes);
files written by other tools may have CRLF. Either way a reader gets CRLF, and the
size a store reports is the size read back (``crlf_size``).
"""

from __future__ import annotations

from typing import BinaryIO, Final

__all__ = ["CHUNK", "MessageFile", "crlf_size", "to_crlf"]

CHUNK: Final = 64 * 1024


def to_crlf(data: bytes) -> bytes:
    """Every line ending as CRLF (an LF alone gains its CR; a CRLF is kept)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def crlf_size(file: BinaryIO) -> int:
    """The size ``file`` has once read back through ``MessageFile``."""
    reader = MessageFile(file)
    total = 0
    while chunk := reader.read(CHUNK):
        total += len(chunk)
    return total


class MessageFile:
    """A message file read with CRLF line endings. ``read(n)`` reads at most ``n``
    octets of the file (so returns at most ``2 n``); b"" at the end. These are
    plain file reads: one chunk costs a page-cache copy, not a wait worth a thread."""

    def __init__(self, file: BinaryIO, size: int | None = None) -> None:
        self._file = file
        self.size = size  # octets read back in all, when the store knows it
        self._held_cr = False  # a chunk ended in CR: its LF may start the next one

    def read(self, n: int = CHUNK) -> bytes:
        data = self._file.read(max(2, n))  # a 1-octet answer is then the file's last
        if self._held_cr:
            self._held_cr = False
            data = b"\r" + data
            if data == b"\r":  # the file ended in a bare CR
                return data
        if len(data) > 1 and data.endswith(b"\r"):
            data, self._held_cr = data[:-1], True
        return to_crlf(data)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> MessageFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
