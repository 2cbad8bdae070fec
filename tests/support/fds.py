"""This process's open files, for tests that check nothing is left open."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["open_files_under"]


def open_files_under(directory: Path) -> list[str]:
    """Paths of this process's open file descriptors inside ``directory`` (an unlinked
    file shows as ``path (deleted)``). Linux: read from /proc/self/fd."""
    fds = Path("/proc/self/fd")
    links = []
    for fd in os.listdir(fds):
        try:
            links.append(os.readlink(fds / fd))
        except OSError:  # closed since the listing
            continue
    return [link for link in links if link.startswith(f"{directory}{os.sep}")]
