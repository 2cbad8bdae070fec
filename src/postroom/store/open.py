"""``open_store(url)``: a storage URL from the configuration to a started Store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from postroom.errors import StoreError
from postroom.store.base import Store
from postroom.store.marker import refuse_lost_database

__all__ = ["open_store", "sqlite_path"]

_SQLITE = "sqlite:///"


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL; None for another engine."""
    if not url.startswith(_SQLITE):
        return None
    path = url[len(_SQLITE) :]
    if not path or path == ":memory:" or path.endswith("/"):
        raise StoreError(f"storage URL {url!r} names no database file")
    return Path(path)


def _create_private(path: Path) -> None:
    """Create the database file (and its folders) readable by its owner only: it holds
    password hashes. SQLite gives its -wal and -shm files the same mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)


async def open_store(
    url: str, *, on_damage: Callable[[str], None] | None = None, checked: bool = False
) -> Store:
    """``sqlite:///relative.db`` or ``sqlite:////absolute.db`` (parent directories are
    created), or ``postgresql://...``; the store is started. ``on_damage`` hears of every
    time the engine finds its files damaged. A missing or empty database beside an
    ``instance-id`` file is refused (see ``marker``) unless the caller ``checked`` it."""
    path = sqlite_path(url)
    if path is not None:
        from postroom.store.sqlite import SqliteStore

        if not checked:
            refuse_lost_database(path, path.parent)
        _create_private(path)
        store = SqliteStore(path, on_damage=on_damage)
        await store.start()
        return store
    if url.startswith(("postgresql://", "postgres://")):
        raise StoreError("PostgreSQL storage is not available yet")
    raise StoreError(
        f"unsupported storage URL {url!r}: use sqlite:///path/to/file.db or postgresql://..."
    )
