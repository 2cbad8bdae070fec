"""The data directory's ``instance-id`` file, and the refusal to replace a lost database.

A database that is missing or empty where the directory's file says a store existed was
deleted or truncated: opening it would silently make a new, empty queue. Every way of
opening a store asks ``refuse_lost_database`` first.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from postroom.errors import StoreError

__all__ = ["MARKER", "RESTORE", "read_marker", "refuse_lost_database", "write_marker"]

MARKER = "instance-id"
RESTORE = "restore it from a backup (postroom db backup)"


def refuse_lost_database(path: Path, data_dir: Path, *, init: bool = False) -> None:
    """StoreError (one line) when ``path`` is missing or empty but ``data_dir`` had a
    store, unless ``init``."""
    state = "missing" if not path.exists() else "empty" if path.stat().st_size == 0 else None
    if state is None:
        return
    known = read_marker(data_dir)
    if known is not None and not init:
        raise StoreError(
            f"the database {path} is {state}, but {data_dir} was used before (store"
            f" {known}): {RESTORE}, or start a new, empty store with `postroom serve --init`"
        )
    # A WAL left beside a lost database belongs to that one: replayed onto a new file it
    # would write its old pages into it.
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + suffix).unlink()


def read_marker(data_dir: Path) -> str | None:
    marker = data_dir / MARKER
    try:
        text = marker.read_text("ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read {marker}: {exc}") from exc
    return text or None


def write_marker(data_dir: Path, instance: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    partial = data_dir / f".{MARKER}.partial"
    with partial.open("w", encoding="ascii") as out:
        out.write(instance + "\n")
        out.flush()
        os.fsync(out.fileno())
    partial.replace(data_dir / MARKER)
