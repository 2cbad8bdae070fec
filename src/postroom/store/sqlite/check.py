"""Integrity checks and online backups of a database file, on connections of their own.

Both open the file read-only and never run the schema set-up, so they work on a damaged
database and beside a running server (a WAL reader blocks no writer).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from postroom.errors import StoreError

__all__ = ["backup", "integrity_problems"]

_MAX_PROBLEMS = 1000  # integrity_check's row limit: enough to judge, bounded output
_PROGRESS_STEP = 10_000  # SQLite virtual-machine steps between deadline checks


def _read_only(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise StoreError(f"no database at {path}")
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)


def integrity_problems(path: Path, *, quick: bool, budget: float | None = None) -> list[str]:
    """One line per problem SQLite finds; [] when the file is sound.

    ``quick``: ``PRAGMA quick_check`` (every page and b-tree, not index contents), else
    ``integrity_check`` and ``foreign_key_check``. ``budget``: stop after this many
    seconds and report what was checked so far as sound (a start on a huge store)."""
    try:
        conn = _read_only(path)
    except sqlite3.Error as exc:
        return [f"cannot open: {exc}"]
    try:
        if budget is not None:
            deadline = time.monotonic() + budget
            conn.set_progress_handler(lambda: int(time.monotonic() > deadline), _PROGRESS_STEP)
        pragma = "quick_check" if quick else "integrity_check"
        try:
            rows = conn.execute(f"PRAGMA {pragma}({_MAX_PROBLEMS})").fetchall()
            problems = [
                line
                for row in rows
                for line in str(row[0]).splitlines()  # one row may hold several lines
                if line not in ("ok", "") and not line.startswith("*** in database")
            ]
            if not quick and not problems:
                problems = [
                    f"{table} row {rowid} refers to a missing {parent} row"
                    for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check")
                ]
        except sqlite3.OperationalError as exc:
            if budget is not None and "interrupted" in str(exc):
                return []  # out of time, nothing found so far
            return [str(exc)]
        except sqlite3.DatabaseError as exc:  # SQLITE_CORRUPT / SQLITE_NOTADB on the way
            return [str(exc)]
        return problems
    finally:
        conn.close()


def backup(path: Path, dest: Path) -> int:
    """Copy the database to ``dest`` (which must not exist) with SQLite's online backup
    API: one read transaction, so the copy is one consistent moment even while a server
    writes, including what is still only in the WAL. Written beside ``dest``, synced,
    checked, then renamed into place; the number of bytes."""
    if dest.exists():
        raise StoreError(f"{dest} exists: give a new file name")
    partial = dest.with_name(f".{dest.name}.partial")
    partial.touch(mode=0o600)  # it holds password hashes, as the database does
    source = _read_only(path)
    try:
        target = sqlite3.connect(partial, isolation_level=None)
        try:
            source.backup(target)  # pages=-1: all of it in one step, one snapshot
            target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            target.close()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        source.close()
    problems = integrity_problems(partial, quick=True)
    if problems:
        partial.unlink(missing_ok=True)
        raise StoreError(f"the copy does not check out: {problems[0]}")
    with partial.open("rb") as copy:
        os.fsync(copy.fileno())
    partial.rename(dest)
    _sync_directory(dest.parent)
    return dest.stat().st_size


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
