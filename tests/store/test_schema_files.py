"""Each engine's schema.sql stamps a new database with the version its code upgrades to."""

from __future__ import annotations

import re
from types import ModuleType

import pytest

from postroom.store.postgres import schema as postgres_schema
from postroom.store.sqlite import schema as sqlite_schema


@pytest.mark.parametrize("module", [sqlite_schema, postgres_schema], ids=["sqlite", "postgres"])
def test_a_new_database_is_stamped_with_the_current_schema_version(module: ModuleType) -> None:
    stamped = re.findall(r"INSERT INTO schema_version \(version\)\s+SELECT (\d+)", module.schema())
    assert [int(version) for version in stamped] == [module.SCHEMA_VERSION]
