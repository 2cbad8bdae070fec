"""Asking a running server about itself: a Unix stream socket in the data directory.

The server binds ``<data_dir>/control.sock``, readable and writable by its owner only
(whoever may read the store may ask, as with the wake-up socket). A client sends one
request line, ``status``, and reads one JSON object back, then the server closes the
connection. ``postroom status`` is the client. No answer means no server runs for the
data directory; a socket file that nobody answers on was left by a server that did not
stop cleanly (the next start replaces it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["ControlListener", "NoAnswer", "ask_status", "control_path", "left_behind"]

_NAME = "control.sock"
_REQUEST = b"status"
_MAX_REQUEST = 256
_READ_TIMEOUT = 5.0  # a client that sends nothing is dropped after this long
_log = logging.getLogger("postroom.control")

Describe = Callable[[], Mapping[str, object]]


class NoAnswer(Exception):
    """A server accepted the connection but gave no readable answer in time."""


def control_path(data_dir: Path) -> Path:
    return data_dir / _NAME


def ask_status(data_dir: Path, timeout: float = 5.0) -> dict[str, Any] | None:
    """The running server's description; None when no server listens (no socket file,
    or one left behind). ``NoAnswer`` when one listens but does not answer in time."""
    path = os.fspath(control_path(data_dir))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        except OSError as exc:  # not ours to use, or a path too long for a socket
            raise NoAnswer(f"cannot ask the server at {path}: {exc.strerror or exc}") from exc
        try:
            sock.sendall(_REQUEST + b"\n")
            answer = _read_all(sock)
            found: dict[str, Any] = json.loads(answer)
        except (OSError, ValueError) as exc:
            raise NoAnswer(f"no answer from the server at {path}: {exc}") from exc
    return found


def left_behind(data_dir: Path) -> bool:
    """A control socket file is there (after ``ask_status`` found no server: one that
    was killed, or crashed, left it)."""
    return control_path(data_dir).exists()


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


class ControlListener:
    """Answers ``status`` requests on the control socket with ``describe()``."""

    def __init__(self, data_dir: Path, describe: Describe) -> None:
        self._path = control_path(data_dir)
        self._describe = describe
        self._server: asyncio.Server | None = None

    async def start(self) -> bool:
        """Listen; False (logged) when the socket cannot be bound, or another server
        answers on it already."""
        if self._path.exists() and await asyncio.to_thread(_answers, self._path):
            _log.warning("another server answers at %s: not replacing it", self._path)
            return False
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()  # left by a server that was killed
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=self._path)
            os.chmod(self._path, 0o600)
        except OSError as exc:
            _log.warning("no control socket at %s: %s", self._path, exc.strerror or exc)
            await self.close()
            return False
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                request = await reader.readline()
            if request.strip() == _REQUEST and len(request) <= _MAX_REQUEST:
                answer: Mapping[str, object] = self._describe()
            else:
                answer = {"error": "unknown request: send `status`"}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (OSError, TimeoutError, ValueError):
            pass  # the client went away or sent too much: nothing to answer
        except Exception:  # a bug in describe(): say so here, never end the server
            _log.exception("the status answer failed")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(os.fspath(path))
        except OSError:
            return False
    return True
