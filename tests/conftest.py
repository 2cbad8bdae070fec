from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from postroom.clock import Clock
from postroom.store import Store
from tests.support.depth import DEPTH, DEPTHS, examples
from tests.support.loops import LoopFactory
from tests.support.postgres import (
    PASSWORD,
    PASSWORD_USER,
    TEMPLATE,
    PostgresCluster,
    find_bindir,
)
from tests.support.servers import loopback_settings
from tests.support.thread import MakeServer, ServerThread

# Property tests without their own count: Hypothesis's 100 examples, more in a deep run.
# The rest comes from the profile already loaded (Hypothesis's own "ci" profile under CI).
settings.register_profile("postroom", max_examples=examples(100))
settings.load_profile("postroom")


def pytest_configure(config: pytest.Config) -> None:
    if DEPTH not in DEPTHS:
        raise pytest.UsageError(f"POSTROOM_TEST_DEPTH={DEPTH}: expected one of {', '.join(DEPTHS)}")


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.mono = 1000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def loop_factory() -> LoopFactory:
    """The event loop ``make_server``'s servers run on: asyncio's, unless a module
    overrides this fixture (``postroom serve`` runs on uvloop's when installed)."""
    return asyncio.new_event_loop


@pytest.fixture
def make_server(tmp_path: Path, loop_factory: LoopFactory) -> Iterator[MakeServer]:
    """Start in-process servers with loopback settings (overrides as keyword arguments)."""
    started: list[ServerThread] = []

    def make(
        clock: Clock | None = None,
        deliver: bool = False,
        *,
        data_dir: Path | None = None,
        store: Store | None = None,  # a store to use instead of the configured one
        **overrides: object,
    ) -> ServerThread:
        settings = loopback_settings(data_dir or tmp_path / f"data{len(started)}", **overrides)
        server = ServerThread(
            settings, clock=clock, deliver=deliver, store=store, loop_factory=loop_factory
        )
        started.append(server.start())
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def server(make_server: MakeServer) -> ServerThread:
    """A server with local domain example.test and user app@example.test / secret."""
    srv = make_server()
    srv.add_domain("example.test")
    srv.add_user("app@example.test", "s3cret-pass")
    return srv


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster for the session, with a migrated template database
    that ``new_database`` copies (fast: a file copy, no schema to build per test)."""
    bindir = find_bindir()
    if bindir is None:
        pytest.fail(
            "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin):"
            " the PostgreSQL engine's tests need it; install the postgresql package",
            pytrace=False,
        )
    cluster = PostgresCluster(bindir)
    try:
        cluster.start()
        with cluster.admin() as conn:
            conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
            conn.execute(f"CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{PASSWORD}'")
        import psycopg

        from postroom.store.postgres.schema import migrate

        with psycopg.connect(cluster.url(TEMPLATE)) as conn:
            migrate(conn)
        yield cluster
    finally:
        cluster.stop()
