"""``open_store(url)``: a storage URL from the configuration to a started Store."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from pathlib import Path

from postroom.errors import StoreError
from postroom.store.base import Store, missing_parts
from postroom.store.marker import refuse_lost_database
from postroom.store.models import DEFAULT_DATABASE_TIMEOUT, DEFAULT_INLINE_BODY_MAX

__all__ = ["open_store", "require_parts", "shown_url", "sqlite_path"]

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


def shown_url(url: str) -> str:
    """The storage URL as it may be shown in a message or a log: no password."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def require_parts(engine: object, name: str) -> None:
    """Refuse, with one line, an engine that lacks a part a server needs."""
    missing = missing_parts(engine)
    if missing:
        raise StoreError(
            f"the {name} storage engine does not implement the {', '.join(missing)}"
            " part(s) of the store yet: a server needs every part"
        )


async def open_store(
    url: str,
    *,
    on_damage: Callable[[str], None] | None = None,
    checked: bool = False,
    migrate: bool = False,
    inline_body_max: int = DEFAULT_INLINE_BODY_MAX,
    database_timeout: float = DEFAULT_DATABASE_TIMEOUT,
) -> Store:
    """``sqlite:///relative.db`` or ``sqlite:////absolute.db`` (parent directories are
    created), or ``postgresql://user@host/db`` (libpq's URL: the password from PGPASSWORD
    or ``.pgpass``, ``?sslmode=verify-full`` and friends for TLS); the store is started.
    ``on_damage`` hears of every time the engine finds its files damaged. A missing or
    empty SQLite database beside an ``instance-id`` file is refused (see ``marker``)
    unless the caller ``checked`` it. An SQLite schema is created or upgraded here; a
    PostgreSQL one is created in an empty database, but upgraded only when ``migrate``
    (many nodes share it: upgrading is an operator's step, ``postroom db migrate``).
    ``inline_body_max``: PostgreSQL keeps larger bodies as large objects; SQLite keeps
    every body in its row. ``database_timeout``: PostgreSQL's bound on a call that goes
    unanswered (``[database] timeout``)."""
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
        from postroom.store.postgres import PostgresStore

        postgres = PostgresStore(
            url, upgrade=migrate, inline_body_max=inline_body_max, timeout=database_timeout
        )
        require_parts(postgres, "postgresql")
        await postgres.start()
        return postgres
    raise StoreError(
        f"unsupported storage URL {url!r}: use sqlite:///path/to/file.db or postgresql://..."
    )
