"""The dashboard's signing key: 32 random bytes in ``<data_dir>/dashboard.key`` (0600),
made on first start, so sessions outlive a restart."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from postroom.errors import PostroomError

__all__ = ["dashboard_key"]

_SIZE = 32


def dashboard_key(data_dir: Path) -> bytes:
    """The key; PostroomError (one line) when it cannot be read or made."""
    path = data_dir / "dashboard.key"
    try:
        return _read_or_make(path)
    except OSError as exc:
        raise PostroomError(f"cannot use {path}: {exc.strerror or exc}") from exc


def _read_or_make(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) < _SIZE:
            raise PostroomError(
                f"{path} is shorter than {_SIZE} bytes: remove it (sessions end)"
            ) from None
        return key
    key = secrets.token_bytes(_SIZE)
    with os.fdopen(fd, "wb") as file:
        file.write(key)
        file.flush()
        os.fsync(file.fileno())
    return key
