from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.postgres import (
    PASSWORD,
    PASSWORD_USER,
    TEMPLATE,
    PostgresCluster,
    find_bindir,
)
from tests.support.servers import loopback_settings
from tests.support.thread import ServerThread


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
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerThread]]:
    """Start in-process servers with loopback settings (overrides as keyword arguments)."""
    started: list[ServerThread] = []

    def make(clock: object = None, deliver: bool = False, **overrides: object) -> ServerThread:
        data_dir = overrides.pop("data_dir", tmp_path / f"data{len(started)}")
        store = overrides.pop("store", None)  # a store to use instead of the configured one
        settings = loopback_settings(data_dir, **overrides)  # type: ignore[arg-type]
        server = ServerThread(settings, clock=clock, deliver=deliver, store=store)  # type: ignore[arg-type]
        started.append(server.start())
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., ServerThread]) -> ServerThread:
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
