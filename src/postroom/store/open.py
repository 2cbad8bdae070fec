"""``open_store(url)``: a storage URL from the configuration to a started Store."""

from __future__ import annotations

from pathlib import Path

from postroom.errors import StoreError
from postroom.store.base import Store

__all__ = ["open_store"]

_SQLITE = "sqlite:///"


def _create_private(path: Path) -> None:
    """Create the database file (and its folders) readable by its owner only: it holds
    password hashes. SQLite gives its -wal and -shm files the same mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)


async def open_store(url: str) -> Store:
    """``sqlite:///relative.db`` or ``sqlite:////absolute.db`` (parent directories are
    created), or ``postgresql://...``; the store is started."""
    if url.startswith(_SQLITE):
        from postroom.store.sqlite import SqliteStore

        path = url[len(_SQLITE) :]
        if not path or path == ":memory:" or path.endswith("/"):
            raise StoreError(f"storage URL {url!r} names no database file")
        _create_private(Path(path))
        store = SqliteStore(path)
        await store.start()
        return store
    if url.startswith(("postgresql://", "postgres://")):
        raise StoreError("PostgreSQL storage is not available yet")
    raise StoreError(
        f"unsupported storage URL {url!r}: use sqlite:///path/to/file.db or postgresql://..."
    )
