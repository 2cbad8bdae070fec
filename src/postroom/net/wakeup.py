"""Cross-process "the queue changed" signal: a Unix datagram socket in the data directory.

The delivery scheduler of a running server binds it; anything else that commits mail into
the same store (``postroom-sendmail``, the CLI, extra accept workers) sends one byte after
its commit, so the scheduler looks at once instead of at its next periodic check. The
signal is only a hint: losing it delays delivery until that check, never loses mail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

__all__ = ["Notifier", "WakeupListener", "notify", "socket_path"]

_NAME = "wake.sock"
_log = logging.getLogger("postroom.wakeup")


def socket_path(data_dir: Path) -> Path:
    return data_dir / _NAME


def notify(data_dir: Path) -> bool:
    """Tell a running server's scheduler that the queue changed. True if one listened."""
    with Notifier(data_dir) as notifier:
        return notifier()


class Notifier:
    """``notify`` again and again from one process (an accept worker, after its
    commits) over one socket, not a socket made and closed for each."""

    def __init__(self, data_dir: Path) -> None:
        self._address = os.fspath(socket_path(data_dir))
        self._sock: socket.socket | None = None

    def __call__(self) -> bool:
        """Send the wake-up; True if a server listened."""
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
        try:
            self._sock.sendto(b"!", self._address)
        except OSError:  # no server, a stale socket file, or its buffer is full
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class WakeupListener:
    """Binds the socket and calls ``on_wake`` for every datagram, on the running loop."""

    def __init__(self, data_dir: Path, on_wake: Callable[[], None]) -> None:
        self._path = socket_path(data_dir)
        self._on_wake = on_wake
        self._sock: socket.socket | None = None

    def start(self) -> bool:
        """Listen; False (and the periodic check alone) when the socket cannot be bound,
        e.g. a data directory path longer than a socket address allows."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()  # left by a server that was killed
            sock.bind(os.fspath(self._path))
            os.chmod(self._path, 0o600)
        except OSError as exc:
            sock.close()
            _log.warning("no wake-up socket at %s: %s", self._path, exc.strerror or exc)
            return False
        self._sock = sock
        loop.add_reader(sock.fileno(), self._readable)
        return True

    def _readable(self) -> None:
        assert self._sock is not None
        woke = False
        while True:  # drain every queued datagram; one wake-up covers them all
            try:
                self._sock.recv(64)
            except (BlockingIOError, InterruptedError):
                break
            woke = True
        if woke:
            self._on_wake()

    def close(self) -> None:
        if self._sock is None:
            return
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
