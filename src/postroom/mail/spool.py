"""SpooledBody: a message body that stays in memory while small and moves to a file when large.

Memory per message stays bounded by ``threshold``; a 25 MiB message lives on disk
once (in ``directory``) until the store copies it into its own commit.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["DEFAULT_THRESHOLD", "SpooledBody"]

DEFAULT_THRESHOLD = 256 * 1024


class SpooledBody:
    def __init__(self, directory: Path | None = None, threshold: int = DEFAULT_THRESHOLD) -> None:
        self._directory = directory
        self._threshold = threshold
        self._memory: bytearray | None = bytearray()
        self._file: BinaryIO | None = None
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def in_memory(self) -> bool:
        return self._memory is not None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._memory is not None:
            if len(self._memory) + len(data) <= self._threshold:
                self._memory += data
                self._size += len(data)
                return
            self._roll_over()
        assert self._file is not None
        self._file.write(data)
        self._size += len(data)

    def _roll_over(self) -> None:
        if self._directory is not None:
            self._directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="spool-", dir=self._directory)
        os.unlink(name)  # anonymous: nothing is left behind if the process dies
        self._file = os.fdopen(fd, "w+b")
        assert self._memory is not None
        self._file.write(self._memory)
        self._memory = None

    def getvalue(self) -> bytes:
        """The whole body in memory: for small bodies and tests only."""
        return b"".join(self.iter_chunks())

    def iter_chunks(self, chunk_size: int = 1 << 20, start: int = 0) -> Iterator[bytes]:
        """The bytes from offset ``start`` on, ``chunk_size`` at a time."""
        if self._memory is not None:
            view = memoryview(self._memory)
            for offset in range(start, len(view), chunk_size):
                yield bytes(view[offset : offset + chunk_size])
            return
        assert self._file is not None
        self._file.flush()
        offset = start
        fd = self._file.fileno()
        while offset < self._size:
            chunk = os.pread(fd, min(chunk_size, self._size - offset), offset)
            if not chunk:
                break
            offset += len(chunk)
            yield chunk

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._memory = None
