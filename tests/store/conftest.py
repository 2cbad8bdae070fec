"""Contract suites by part, many engines: each engine is a Backend the fixtures build.

The Store is cut into parts (postroom.store.base): lifecycle, queue, log, directory, api.
Each test module is one part's contract suite and says which parts it needs with
``pytestmark = pytest.mark.store_parts(...)`` (a test may add more); it runs on every
engine whose ENGINES entry implements them all. An engine is added one part at a time:
list the parts it implements, and the suites of those parts run on it.

A Backend opens started stores on one database (a second store on the same database
stands for the CLI process) and gives the suite the few engine-level handles it needs:
the group committer, a size-capped database, a held write lock and raw row counts.
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

PARTS = frozenset({"lifecycle", "queue", "log", "directory", "api"})
ENGINES: dict[str, frozenset[str]] = {"sqlite": PARTS}  # engine -> the parts it implements


class Backend(Protocol):
    async def open(self, *, busy_timeout: float = 5.0) -> Store: ...

    async def open_capped(self, max_bytes: int) -> Store: ...

    def committer(self, store: object) -> GroupCommitter[Any]: ...

    def write_lock_held(self) -> contextlib.AbstractContextManager[None]: ...

    def rows_of(self, store: object, message_id: str) -> int: ...

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

    def committer(self, store: object) -> GroupCommitter[Any]:
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

    def rows_of(self, store: object, message_id: str) -> int:
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


def engines_for(needed: set[str], engines: dict[str, frozenset[str]]) -> list[str]:
    """The engines implementing every part in ``needed``; a usage error when ``needed``
    is empty, names no part, or no engine implements it (such a suite would never run)."""
    if not needed or needed - PARTS:
        raise pytest.UsageError(f"store_parts must name parts of {sorted(PARTS)}: {needed}")
    chosen = [name for name, parts in engines.items() if needed <= parts]
    if not chosen:
        raise pytest.UsageError(f"no engine implements {sorted(needed)}")
    return chosen


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each contract test on every engine implementing the parts it needs."""
    if "backend" not in metafunc.fixturenames:
        return
    needed: set[str] = set()
    for marker in metafunc.definition.iter_markers("store_parts"):
        needed.update(marker.args)
    metafunc.parametrize("backend", engines_for(needed, ENGINES), indirect=True)


@pytest.fixture
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    builders: dict[str, Callable[[Path], Backend]] = {"sqlite": SqliteBackend}
    harness = builders[request.param](tmp_path)
    yield harness
    await harness.aclose()


@pytest.fixture
async def store(backend: Backend) -> Store:
    return await backend.open()
