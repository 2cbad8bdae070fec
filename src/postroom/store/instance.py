"""A data directory and its store belong together: a lost or replaced database is noticed.

At the first start the store gets a random instance id (inside the database) and the data
directory an ``instance-id`` file holding the same id. From then on opening refuses, with
one line, a database that is missing or empty (deleted, truncated: starting would
silently make a new, empty queue and refuse mail for the local domains) or holds another
id (the wrong file). ``init`` (``postroom serve --init``) makes a new store where the
database is missing or empty, or adopts the other one, and the directory takes its id.
A directory without the file is new: its store is created (or a database from before
instance ids is adopted), unless the caller only reads or changes what a store holds
(``create=False``): then ``NoStore`` says that there is none, and nothing is made.

A server also runs a quick integrity check first (``check_budget`` seconds at most): a
damaged database is refused rather than written into further.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from postroom.errors import NoStore, StoreDamaged, StoreError
from postroom.store.base import Store
from postroom.store.marker import RESTORE, read_marker, refuse_lost_database, write_marker
from postroom.store.models import DEFAULT_DATABASE_TIMEOUT, DEFAULT_INLINE_BODY_MAX
from postroom.store.open import open_store, shown_url, sqlite_path

__all__ = ["open_instance_store", "store_exists"]

_log = logging.getLogger("postroom.store")


async def open_instance_store(
    url: str,
    data_dir: Path,
    *,
    init: bool = False,
    migrate: bool = False,
    create: bool = True,
    check_budget: float | None = None,
    on_damage: Callable[[str], None] | None = None,
    inline_body_max: int = DEFAULT_INLINE_BODY_MAX,
    database_timeout: float = DEFAULT_DATABASE_TIMEOUT,
) -> Store:
    """The started store of ``data_dir``; StoreError (one line) when it is not the one the
    directory had, NoStore when there is none and ``create`` is false."""
    known = read_marker(data_dir)
    path = sqlite_path(url)
    if not create and known is None and not store_exists(url):
        raise NoStore(str(path or shown_url(url)))
    if path is not None:
        refuse_lost_database(path, data_dir, init=init)
        if check_budget is not None and path.exists() and path.stat().st_size > 0:
            await _check_integrity(path, check_budget)
    store = await open_store(
        url,
        on_damage=on_damage,
        checked=True,
        migrate=migrate,
        inline_body_max=inline_body_max,
        database_timeout=database_timeout,
    )
    try:
        found = await store.instance_id()
        if known is not None and found != known and not init:
            raise StoreError(
                f"the database {path or shown_url(url)} is store {found}, but {data_dir}"
                f" belongs to store {known}: configure the right database, or make this"
                " directory use it with `postroom serve --init`"
            )
        if found != known:
            write_marker(data_dir, found)
    except BaseException:
        await store.aclose()
        raise
    return store


def store_exists(url: str) -> bool:
    """Whether the database holds a store (a missing or empty SQLite file does not)."""
    path = sqlite_path(url)
    return path is None or (path.is_file() and path.stat().st_size > 0)


async def _check_integrity(path: Path, budget: float) -> None:
    from postroom.store.sqlite.check import integrity_problems

    started = time.monotonic()
    problems = await asyncio.to_thread(integrity_problems, path, quick=True, budget=budget)
    if time.monotonic() - started >= budget:
        _log.info(
            "the integrity check at start stopped after %g s on a big store;"
            " `postroom db check` checks all of it",
            budget,
        )
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise StoreDamaged(
            f"the database {path} is damaged: {problems[0]}{more}; see `postroom db check`,"
            f" and {RESTORE}, or move it aside and start a new, empty store with"
            " `postroom serve --init`"
        )
