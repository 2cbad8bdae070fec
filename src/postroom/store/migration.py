"""The schema version a database has, against the one this postroom understands, and
bringing it up to date on demand (``postroom db status`` / ``postroom db migrate``).

Both engines keep ``SCHEMA_VERSION`` and ``UPGRADES`` (``UPGRADES[n]`` brings version n
to n + 1) in their ``schema`` module; this module only reads them and calls the
engine's own ``migrate``, which applies every pending step in one transaction.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from postroom.errors import NoStore, StoreError
from postroom.store.open import shown_url, sqlite_path

__all__ = ["SchemaState", "migrate_schema", "schema_state"]


@dataclass(frozen=True)
class SchemaState:
    engine: str  # sqlite | postgresql
    url: str  # as it may be shown: no password
    found: int | None  # None: the database has no postroom schema yet
    understood: int  # SCHEMA_VERSION of this postroom
    oldest: int  # the oldest version this postroom upgrades

    @property
    def current(self) -> bool:
        return self.found == self.understood

    def plan(self) -> list[str]:
        """What ``migrate`` would do, one line per step; a refusal is a StoreError."""
        if self.found is None:
            return [f"create the schema, version {self.understood}"]
        if self.found > self.understood:
            raise StoreError(
                f"database schema version {self.found} is newer than {self.understood},"
                " the newest this postroom understands: upgrade postroom"
            )
        if self.found < self.oldest:
            raise StoreError(
                f"database schema version {self.found} is older than {self.oldest}, the"
                " oldest this postroom upgrades: upgrade through an older release first"
            )
        return [f"upgrade schema {n} -> {n + 1}" for n in range(self.found, self.understood)]


def schema_state(url: str) -> SchemaState:
    """Read the database's schema version; nothing is written."""
    path = sqlite_path(url)
    if path is not None:
        from postroom.store.sqlite import schema as sqlite_schema

        if not path.is_file() or path.stat().st_size == 0:
            raise NoStore(str(path))
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            found = sqlite_schema.schema_version(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc
        finally:
            conn.close()
        return _state("sqlite", url, found, sqlite_schema.SCHEMA_VERSION, sqlite_schema.UPGRADES)
    from postroom.store.postgres import schema as pg_schema
    from postroom.store.postgres.connection import connection

    with connection(url) as pg:
        found = pg_schema.schema_version(pg)
    return _state("postgresql", url, found, pg_schema.SCHEMA_VERSION, pg_schema.UPGRADES)


def migrate_schema(url: str) -> tuple[SchemaState, list[str]]:
    """Apply the pending steps in one transaction; the state before, and the steps done."""
    before = schema_state(url)
    steps = before.plan()
    if before.current:
        return before, []
    path = sqlite_path(url)
    if path is not None:
        from postroom.store.sqlite import schema as sqlite_schema

        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            sqlite_schema.migrate(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot migrate {path}: {exc}") from exc
        finally:
            conn.close()
    else:
        from postroom.store.postgres import schema as pg_schema
        from postroom.store.postgres.connection import connection

        with connection(url) as pg:
            pg_schema.migrate(pg)
    return before, steps


def _state(
    engine: str, url: str, found: int | None, understood: int, upgrades: dict[int, str]
) -> SchemaState:
    oldest = min(upgrades, default=understood)
    return SchemaState(engine, shown_url(url), found, understood, oldest)
