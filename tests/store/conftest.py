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
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pytest

from postroom.store import Store, base
from postroom.store.groupcommit import GroupCommitter
from postroom.store.postgres import PostgresStore
from postroom.store.sqlite import SqliteStore
from tests.support.postgres import PostgresCluster

PARTS = frozenset(base.PARTS)
# engine -> the parts it implements
ENGINES: dict[str, frozenset[str]] = {"sqlite": PARTS, "postgresql": PARTS}


class Backend(Protocol):
    # Whether bodies above a store's inline_body_max leave their rows (SQLite: never).
    stores_large_bodies_apart: bool
    # Whether each writer counts into counter rows of its own (merge_counters folds them).
    counts_per_writer: bool
    # Whether a claim reads a small message's body with it (Claim.body).

    async def open(
        self, *, busy_timeout: float = 5.0, inline_body_max: int | None = None
    ) -> Store: ...

    async def open_capped(self, max_bytes: int) -> Store: ...

    def committer(self, store: object) -> GroupCommitter[Any]: ...

    def write_lock_held(self) -> contextlib.AbstractContextManager[None]: ...

    def rows_of(self, store: object, message_id: str) -> int: ...

    def bodies_apart(self, store: object) -> tuple[int, int]:
        """(bodies stored apart from their rows, such objects no row refers to)."""
        ...

    async def aclose(self) -> None: ...


class SqliteBackend:
    stores_large_bodies_apart = False
    counts_per_writer = False

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "queue" / "postroom.db"
        self.path.parent.mkdir(parents=True)
        self.opened: list[SqliteStore] = []

    async def open(self, *, busy_timeout: float = 5.0, inline_body_max: int | None = None) -> Store:
        """A started store on the shared database (every body in its row, whatever
        ``inline_body_max``)."""
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

    def bodies_apart(self, store: object) -> tuple[int, int]:
        return (0, 0)

    async def aclose(self) -> None:
        for store in self.opened:
            await store.aclose()


class PostgresBackend:
    """An empty database of the session's cluster per test (see tests.support.postgres)."""

    stores_large_bodies_apart = True
    counts_per_writer = True

    def __init__(self, cluster: PostgresCluster) -> None:
        self.cluster = cluster
        self.database = cluster.lend_database()
        self.url = cluster.url(self.database)
        self.databases: list[str] = []  # of open_capped
        self.opened: list[PostgresStore] = []

    async def open(self, *, busy_timeout: float = 5.0, inline_body_max: int | None = None) -> Store:
        if inline_body_max is None:
            return await self._start(PostgresStore(self.url, busy_timeout=busy_timeout))
        return await self._start(
            PostgresStore(self.url, busy_timeout=busy_timeout, inline_body_max=inline_body_max)
        )

    async def open_capped(self, max_bytes: int) -> Store:
        """A store on a fresh database whose bodies cannot grow past ``max_bytes``: a
        trigger raises PostgreSQL's own disk_full error (SQLSTATE 53100) as a full disk
        would, so the store's handling of it is what is tested."""
        name = self.cluster.new_database()
        self.databases.append(name)
        url = self.cluster.url(name)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE FUNCTION full_disk() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " IF (SELECT sum(octet_length(data)) FROM message_bodies) > "
                + str(int(max_bytes))
                + " THEN RAISE EXCEPTION 'could not extend file: No space left on device'"
                " USING ERRCODE = 'disk_full'; END IF; RETURN NULL; END $$"
            )
            conn.execute(
                "CREATE TRIGGER full_disk AFTER INSERT ON message_bodies"
                " FOR EACH STATEMENT EXECUTE FUNCTION full_disk()"
            )
        # Bodies stay in their rows, where the trigger counts them.
        return await self._start(PostgresStore(url, inline_body_max=1 << 40))

    async def _start(self, store: PostgresStore) -> Store:
        await store.start()
        self.opened.append(store)
        return store

    def committer(self, store: object) -> GroupCommitter[Any]:
        assert isinstance(store, PostgresStore)
        return store.committer

    @contextlib.contextmanager
    def write_lock_held(self) -> Iterator[None]:
        """Another client holds a lock that keeps new messages out meanwhile."""
        with psycopg.connect(self.url) as conn:
            conn.execute("LOCK TABLE messages IN SHARE MODE")
            try:
                yield
            finally:
                conn.rollback()

    def rows_of(self, store: object, message_id: str) -> int:
        assert isinstance(store, PostgresStore)
        with psycopg.connect(store.url, autocommit=True) as conn:
            total = 0
            for table, column in (
                ("messages", "id"),
                ("recipients", "message_id"),
                ("message_bodies", "id"),
                ("attempts", "message_id"),
                ("provider_events", "message_id"),
            ):
                row = conn.execute(
                    f"SELECT count(*) FROM {table} WHERE {column} = %s", (message_id,)
                ).fetchone()
                assert row is not None
                total += row[0]
            return total

    def bodies_apart(self, store: object) -> tuple[int, int]:
        assert isinstance(store, PostgresStore)
        with psycopg.connect(store.url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE NOT EXISTS"
                " (SELECT 1 FROM message_bodies b WHERE b.large = lo.oid))"
                " FROM pg_largeobject_metadata lo"
            ).fetchone()
            assert row is not None
            return (row[0], row[1])

    async def aclose(self) -> None:
        for store in self.opened:
            await store.aclose()
        self.cluster.give_back(self.database)
        for name in self.databases:
            self.cluster.drop_database(name)


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
    harness: Backend
    if request.param == "postgresql":
        harness = PostgresBackend(request.getfixturevalue("postgres_cluster"))
    else:
        harness = SqliteBackend(tmp_path)
    yield harness
    await harness.aclose()


@pytest.fixture
async def store(backend: Backend) -> Store:
    return await backend.open()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A started SQLite store of its own, for tests of what only that engine has."""
    backend = SqliteBackend(tmp_path)
    opened = await backend.open()
    assert isinstance(opened, SqliteStore)
    yield opened
    await backend.aclose()
