"""One contract suite, many engines: each engine is a Backend the fixtures build.

A Backend opens started stores on one database (a second store on the same database
stands for the CLI process) and gives the suite the few engine-level handles it needs:
the group committer, a size-capped database, a held write lock and raw row counts.
Adding PostgreSQL means adding a Backend class and its name to BACKENDS.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from postroom.store import Store
from postroom.store.groupcommit import GroupCommitter
from postroom.store.sqlite import SqliteStore

BACKENDS = ["sqlite"]


class Backend(Protocol):
    async def open(self, *, busy_timeout: float = 5.0) -> Store: ...

    async def open_capped(self, max_bytes: int) -> Store: ...

    def committer(self, store: Store) -> GroupCommitter[Any]: ...

    def write_lock_held(self) -> contextlib.AbstractContextManager[None]: ...

    def rows_of(self, store: Store, message_id: str) -> int: ...

    async def aclose(self) -> None: ...


class SqliteBackend:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "queue" / "postroom.db"
        self.path.parent.mkdir(parents=True)
        self.opened: list[SqliteStore] = []

    async def open(self, *, busy_timeout: float = 5.0) -> Store:
        """A started store on the shared database."""
        return await self._start(SqliteStore(self.path, busy_timeout=busy_timeout))

    async def open_capped(self, max_bytes: int) -> Store:
        """A started store on a fresh database that cannot grow past ``max_bytes``."""
        path = self.directory / f"capped{len(self.opened)}.db"
        return await self._start(SqliteStore(path, max_bytes=max_bytes))

    async def _start(self, store: SqliteStore) -> Store:
        await store.start()
        self.opened.append(store)
        return store

    def committer(self, store: Store) -> GroupCommitter[Any]:
        assert isinstance(store, SqliteStore)
        return store.committer

    @contextlib.contextmanager
    def write_lock_held(self) -> Iterator[None]:
        """Another process holds the write lock on the shared database meanwhile."""
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()

    def rows_of(self, store: Store, message_id: str) -> int:
        """Rows of any table that belong to ``message_id``."""
        assert isinstance(store, SqliteStore)
        with contextlib.closing(sqlite3.connect(store.path)) as conn:
            return sum(
                conn.execute(
                    f"SELECT count(*) FROM {table} WHERE {column} = ?", (message_id,)
                ).fetchone()[0]
                for table, column in (
                    ("messages", "id"),
                    ("recipients", "message_id"),
                    ("message_bodies", "id"),
                    ("attempts", "message_id"),
                    ("provider_events", "message_id"),
                )
            )

    async def aclose(self) -> None:
        for store in self.opened:
            await store.aclose()


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    builders: dict[str, Callable[[Path], Backend]] = {"sqlite": SqliteBackend}
    harness = builders[request.param](tmp_path)
    yield harness
    await harness.aclose()


@pytest.fixture
async def store(backend: Backend) -> Store:
    return await backend.open()
