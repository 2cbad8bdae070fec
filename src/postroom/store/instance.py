"""A data directory and its store belong together: a lost or replaced database is noticed.

At the first start the store gets a random instance id (inside the database) and the data
directory an ``instance-id`` file holding the same id. From then on a start refuses, with
one line, when the database is missing or empty (deleted, truncated: starting would
silently make a new, empty queue and refuse mail for the local domains) or holds another
id (the wrong file). ``init`` (``postroom serve --init``) makes a new store anyway and
takes its id. A directory without the file is new: its store is created (or an existing
database from before instance ids is adopted).

A quick integrity check runs before a server uses the file (``check_budget`` seconds at
most): a damaged database is refused rather than written into further.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from postroom.errors import StoreDamaged, StoreError
from postroom.store.base import Store
from postroom.store.open import open_store, sqlite_path

__all__ = ["MARKER", "open_instance_store"]

MARKER = "instance-id"
_RESTORE = "restore it from a backup (postroom db backup), or start a new, empty store"


async def open_instance_store(
    url: str,
    data_dir: Path,
    *,
    init: bool = False,
    create: bool = True,
    check_budget: float | None = None,
    on_damage: Callable[[str], None] | None = None,
) -> Store:
    """The started store of ``data_dir``; StoreError (one line) when it is not the one the
    directory had. ``create=False``: never make a database (commands that only read)."""
    marker = data_dir / MARKER
    known = _read_marker(marker)
    path = sqlite_path(url)
    if path is not None:
        _check_file(path, data_dir, known, init=init, create=create)
        if check_budget is not None and path.exists() and path.stat().st_size > 0:
            await _check_integrity(path, check_budget)
    store = await open_store(url, on_damage=on_damage)
    try:
        found = await store.instance_id()
        if known is not None and found != known and not init:
            raise StoreError(
                f"the database {path or url} is store {found}, but {data_dir} belongs to"
                f" store {known}: configure the right database, or {_RESTORE} with"
                " `postroom serve --init`"
            )
        if found != known:
            _write_marker(marker, found)
    except BaseException:
        await store.aclose()
        raise
    return store


def _check_file(path: Path, data_dir: Path, known: str | None, *, init: bool, create: bool) -> None:
    state = "missing" if not path.exists() else "empty" if path.stat().st_size == 0 else None
    if state is None:
        return
    if known is not None and not init:
        raise StoreError(
            f"the database {path} is {state}, but {data_dir} was used before (store"
            f" {known}): {_RESTORE} with `postroom serve --init`"
        )
    if not create:
        raise StoreError(f"no postroom database at {path}: check --config and data_dir")
    # A WAL left beside a lost database belongs to that one: replayed onto a new file it
    # would write old pages into it.
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + suffix).unlink()


async def _check_integrity(path: Path, budget: float) -> None:
    from postroom.store.sqlite.check import integrity_problems

    problems = await asyncio.to_thread(integrity_problems, path, quick=True, budget=budget)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise StoreDamaged(
            f"the database {path} is damaged: {problems[0]}{more}; see `postroom db check`,"
            f" and {_RESTORE} with `postroom serve --init`"
        )


def _read_marker(marker: Path) -> str | None:
    try:
        text = marker.read_text("ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read {marker}: {exc}") from exc
    return text or None


def _write_marker(marker: Path, instance: str) -> None:
    marker.parent.mkdir(parents=True, exist_ok=True)
    partial = marker.with_name(f".{marker.name}.partial")
    with partial.open("w", encoding="ascii") as out:
        out.write(instance + "\n")
        out.flush()
        os.fsync(out.fileno())
    partial.replace(marker)
