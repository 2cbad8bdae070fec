"""Accept balance between the processes that share a listening socket (``workers > 1``).

Every process that accepts on a shared socket is woken for each new connection, and the
first to call ``accept`` takes it. That is whichever happens to be between two pieces of
work, not the one with least to do: with 20 long connections opened at once, 13 went
to one process and 7 to the other, and the busier process bounded the rate while the
other had a core to spare.

So each process publishes how many connections it has open, in a small shared table
(a file the primary makes and the accept workers inherit, mapped by every process), and
one that has more open than another accepting process holds back for a moment, leaving
the connection to it. Holding back is bounded (``MAX_HOLDS`` in a row, then it accepts
anyway), so a process that is slow to accept (or stopped) delays a connection by a few
milliseconds at most, never refuses it.

A slot of -1 is a process not accepting (not started yet, or gone): it is not compared.
Each slot is written by its own process only (or by the primary once the process has
gone), as one aligned 4-byte store.
"""

from __future__ import annotations

import mmap
import os
import tempfile

__all__ = ["HOLD_SECONDS", "MAX_HOLDS", "SLACK", "AcceptShares"]

HOLD_SECONDS = 0.001  # one hold: long enough for a waiting process to take the connection
MAX_HOLDS = 3  # holds in a row before accepting anyway
# A difference of one is left alone: counts move by one with every connection, and a
# hold costs more than the connection does (two epoll changes and a timer).
SLACK = 1
_ABSENT = -1
_SLOT = 4  # bytes: a signed 32-bit count


class AcceptShares:
    """One process's view of the table: its own slot (``index``) and everyone's."""

    def __init__(self, fd: int, slots: int, index: int) -> None:
        """Map the table in ``fd`` (``slots`` entries); this process is slot ``index``."""
        if not 0 <= index < slots:
            raise ValueError("index outside the table")
        self.fd = fd
        self._index = index
        self._map = mmap.mmap(fd, slots * _SLOT)
        self._counts = memoryview(self._map).cast("i")
        self._open = 0

    @classmethod
    def create(cls, slots: int) -> AcceptShares:
        """A new table, every slot absent, for the primary (slot 0). Its ``fd`` is
        inheritable: pass it to each worker, which attaches with its own index."""
        fd = _anonymous_file()
        os.ftruncate(fd, slots * _SLOT)
        shares = cls(fd, slots, 0)
        for slot in range(slots):
            shares._counts[slot] = _ABSENT
        return shares

    def accepting(self) -> None:
        """This process accepts from now on: its count is compared."""
        self._counts[self._index] = self._open

    def opened(self) -> None:
        self._open += 1
        self._counts[self._index] = self._open

    def closed(self) -> None:
        self._open -= 1
        self._counts[self._index] = self._open

    def stopped(self) -> None:
        """This process accepts no more."""
        self._counts[self._index] = _ABSENT

    def gone(self, index: int) -> None:
        """Process ``index`` accepts no more (it exited): leave it out of comparisons."""
        self._counts[index] = _ABSENT

    def busier(self) -> bool:
        """This process has more connections open than some other accepting process,
        by more than ``SLACK``."""
        own = self._open - SLACK
        for slot, count in enumerate(self._counts):
            if slot != self._index and 0 <= count < own:
                return True
        return False

    def close(self) -> None:
        self._counts.release()
        self._map.close()
        os.close(self.fd)


def _anonymous_file() -> int:
    """An inheritable descriptor of a file with no name (gone with its last user)."""
    fd, path = tempfile.mkstemp(prefix="postroom-accept-")
    os.unlink(path)
    os.set_inheritable(fd, True)
    return fd
