"""Cross-process hints over Unix datagram sockets in the data directory.

"The queue changed" (``wake.sock``): the delivery scheduler of a running server binds
it; anything else that commits mail into the same store (``postroom-sendmail``, the
CLI, extra accept workers) sends one byte after its commit, so the scheduler looks at
once instead of at its next periodic check. The signal is only a hint: losing it
delays delivery until that check, never loses mail.

``DatagramSender`` and ``DatagramListener`` are the two ends of any such socket (the
accept workers also tell the primary's alerts of their attempts this way,
``events.forward``): a datagram the listener cannot take (it is not running, its buffer
is full) is dropped, never waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "DatagramListener",
    "DatagramSender",
    "Notifier",
    "WakeupListener",
    "notify",
    "socket_path",
]

_NAME = "wake.sock"
_log = logging.getLogger("postroom.wakeup")


def socket_path(data_dir: Path) -> Path:
    return data_dir / _NAME


def notify(data_dir: Path) -> bool:
    """Tell a running server's scheduler that the queue changed. True if one listened."""
    with Notifier(data_dir) as notifier:
        return notifier()


class DatagramSender:
    """Datagrams to one socket path, over one socket made at the first send."""

    def __init__(self, path: Path) -> None:
        self._address = os.fspath(path)
        self._sock: socket.socket | None = None

    def send(self, data: bytes) -> bool:
        """True if a listener took it; False (dropped) if none listens or it is full."""
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
        try:
            self._sock.sendto(data, self._address)
        except OSError:  # no listener, a stale socket file, or its buffer is full
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class DatagramListener:
    """Binds a socket path and calls ``on_datagrams`` with what is queued each time it
    is readable (one call for a burst), on the running loop."""

    def __init__(
        self,
        path: Path,
        on_datagrams: Callable[[list[bytes]], None],
        *,
        name: str,
        size: int = 64,
    ) -> None:
        """``name``: what it is for, in the log; ``size``: the longest datagram read
        whole (a longer one is cut)."""
        self._path = path
        self._name = name
        self._on_datagrams = on_datagrams
        self._size = size
        self._sock: socket.socket | None = None

    def start(self) -> bool:
        """Listen; False (and a warning) when the socket cannot be bound, e.g. a data
        directory path longer than a socket address allows."""
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
            _log.warning("no %s socket at %s: %s", self._name, self._path, exc.strerror or exc)
            return False
        self._sock = sock
        loop.add_reader(sock.fileno(), self._readable)
        return True

    def _readable(self) -> None:
        assert self._sock is not None
        got: list[bytes] = []
        while True:  # drain every queued datagram
            try:
                got.append(self._sock.recv(self._size))
            except (BlockingIOError, InterruptedError):
                break
        if got:
            self._on_datagrams(got)

    def close(self) -> None:
        if self._sock is None:
            return
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()


class Notifier:
    """``notify`` again and again from one process (an accept worker, after its
    commits) over one socket, not a socket made and closed for each."""

    def __init__(self, data_dir: Path) -> None:
        self._sender = DatagramSender(socket_path(data_dir))

    def __call__(self) -> bool:
        """Send the wake-up; True if a server listened."""
        return self._sender.send(b"!")

    def close(self) -> None:
        self._sender.close()

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class WakeupListener:
    """Binds the socket and calls ``on_wake`` once for the datagrams queued each time it
    is readable, on the running loop."""

    def __init__(self, data_dir: Path, on_wake: Callable[[], None]) -> None:
        self._listener = DatagramListener(
            socket_path(data_dir), lambda _: on_wake(), name="wake-up"
        )

    def start(self) -> bool:
        """Listen; False (and the periodic check alone) when the socket cannot be bound."""
        return self._listener.start()

    def close(self) -> None:
        self._listener.close()
