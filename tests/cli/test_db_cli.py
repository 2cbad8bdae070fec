"""``postroom db status`` and ``postroom db migrate`` on both engines: an old schema is
shown and upgraded, a current one left alone, a newer one refused in one line."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from postroom.cli import main
from postroom.errors import StoreError
from postroom.store import open_store
from postroom.store.postgres import schema as pg_schema
from postroom.store.sqlite.schema import SCHEMA_VERSION
from tests.store.test_sqlite_schema import SCHEMA_V1
from tests.support.postgres import PostgresCluster


def invoke(config: Path, *args: str) -> Result:
    return CliRunner().invoke(
        main, ["db", *args, "--config", str(config)], env={"POSTROOM_CONFIG": None}
    )


def configure(tmp_path: Path, storage: str) -> Path:
    config = tmp_path / "postroom.toml"
    config.write_text(
        f'hostname = "mail.test"\ndata_dir = "{tmp_path / "data"}"\nstorage = "{storage}"\n'
    )
    return config


@pytest.fixture
def sqlite_v1(tmp_path: Path) -> Path:
    """A configuration whose SQLite store was written by schema version 1."""
    path = tmp_path / "data" / "postroom.db"
    path.parent.mkdir()
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA_V1)
    return configure(tmp_path, f"sqlite:///{path}")


@pytest.fixture
def pg_database(postgres_cluster: PostgresCluster) -> Iterator[str]:
    name = postgres_cluster.new_database()
    yield postgres_cluster.url(name)
    postgres_cluster.drop_database(name)


def test_status_of_an_old_sqlite_store_names_each_pending_step_and_exits_1(
    sqlite_v1: Path,
) -> None:
    result = invoke(sqlite_v1, "status")
    assert result.exit_code == 1, result.output
    assert "engine:   sqlite" in result.output
    assert "schema:   1\n" in result.output
    assert f"postroom: {SCHEMA_VERSION}\n" in result.output
    steps = [line for line in result.output.splitlines() if line.startswith("migrate:")]
    assert steps == [f"migrate:  upgrade schema {n} -> {n + 1}" for n in range(1, SCHEMA_VERSION)]


def test_migrate_upgrades_an_old_sqlite_store_and_status_is_then_clean(
    sqlite_v1: Path,
) -> None:
    migrated = invoke(sqlite_v1, "migrate")
    assert migrated.exit_code == 0, migrated.output
    assert len(migrated.output.splitlines()) == SCHEMA_VERSION - 1
    assert f"upgrade schema {SCHEMA_VERSION - 1} -> {SCHEMA_VERSION}: done" in migrated.output
    status = invoke(sqlite_v1, "status")
    assert status.exit_code == 0, status.output
    assert "migrate:  nothing to do" in status.output
    again = invoke(sqlite_v1, "migrate")
    assert again.exit_code == 0 and "nothing to do" in again.output


def test_a_newer_sqlite_schema_is_refused_in_one_line_and_left_as_it_was(
    sqlite_v1: Path, tmp_path: Path
) -> None:
    path = tmp_path / "data" / "postroom.db"
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    status = invoke(sqlite_v1, "status")
    assert status.exit_code == 1
    assert "migrate:  refuses: database schema version 99 is newer" in status.output
    migrated = invoke(sqlite_v1, "migrate")
    assert migrated.exit_code == 1
    assert migrated.output.count("\n") == 1 and "upgrade postroom" in migrated.output
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (99,)


def test_status_masks_the_password_of_a_postgresql_url(
    tmp_path: Path, postgres_cluster: PostgresCluster, pg_database: str
) -> None:
    config = configure(tmp_path, pg_database.replace("://", "://postroom:hunter2@", 1))
    result = invoke(config, "status")
    assert "hunter2" not in result.output


def test_migrate_upgrades_an_old_postgresql_schema(
    tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This postroom pretends to know the next version, which adds a column, as the next
    # release will.
    now = pg_schema.SCHEMA_VERSION
    monkeypatch.setattr(pg_schema, "SCHEMA_VERSION", now + 1)
    upgrades = {**pg_schema.UPGRADES, now: "ALTER TABLE domains ADD COLUMN note text"}
    monkeypatch.setattr(pg_schema, "UPGRADES", upgrades)
    config = configure(tmp_path, pg_database)
    status = invoke(config, "status")
    assert status.exit_code == 1, status.output
    assert "engine:   postgresql" in status.output and f"schema:   {now}\n" in status.output
    assert f"migrate:  upgrade schema {now} -> {now + 1}" in status.output
    migrated = invoke(config, "migrate")
    assert migrated.exit_code == 0, migrated.output
    assert migrated.output.endswith(f"upgrade schema {now} -> {now + 1}: done\n")
    with psycopg.connect(pg_database) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (now + 1,)
        conn.execute("SELECT note FROM domains")
    assert invoke(config, "status").exit_code == 0


def test_a_newer_postgresql_schema_is_refused_in_one_line(tmp_path: Path, pg_database: str) -> None:
    with psycopg.connect(pg_database) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    config = configure(tmp_path, pg_database)
    assert invoke(config, "status").exit_code == 1
    migrated = invoke(config, "migrate")
    assert migrated.exit_code == 1
    assert migrated.output.count("\n") == 1 and "newer than" in migrated.output


async def test_a_node_refuses_an_older_postgresql_schema_unless_told_to_migrate(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = pg_schema.SCHEMA_VERSION
    monkeypatch.setattr(pg_schema, "SCHEMA_VERSION", now + 1)
    upgrades = {**pg_schema.UPGRADES, now: "ALTER TABLE domains ADD COLUMN note text"}
    monkeypatch.setattr(pg_schema, "UPGRADES", upgrades)
    with pytest.raises(StoreError) as refused:
        await open_store(pg_database)
    assert str(refused.value) == (
        f"database schema version {now} is older than {now + 1}, the version this postroom"
        " needs: run `postroom db migrate` (or start with `postroom serve --migrate`)"
    )
    store = await open_store(pg_database, migrate=True)
    await store.aclose()
    with psycopg.connect(pg_database) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (now + 1,)


async def test_a_node_refuses_a_newer_postgresql_schema_even_when_told_to_migrate(
    pg_database: str,
) -> None:
    with psycopg.connect(pg_database) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError) as refused:
        await open_store(pg_database, migrate=True)
    assert "newer than" in str(refused.value) and "\n" not in str(refused.value)
