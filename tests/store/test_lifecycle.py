"""The lifecycle part of the Store contract: opening by URL, the instance id."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.errors import StoreError
from postroom.store import (
    open_store,
)
from tests.store.conftest import Backend
from tests.store.factories import NOW

pytestmark = pytest.mark.store_parts("lifecycle")


async def test_open_store_sqlite_relative_and_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for url, path in [
        ("sqlite:///data/a/postroom.db", tmp_path / "data" / "a" / "postroom.db"),
        (f"sqlite:///{tmp_path}/b/postroom.db", tmp_path / "b" / "postroom.db"),
    ]:
        store = await open_store(url)
        try:
            assert await store.add_domain("example.org", NOW) is True
        finally:
            await store.aclose()
        assert path.is_file()


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("sqlite:///", StoreError),
        ("sqlite:///:memory:", StoreError),
        ("mysql://db/postroom", StoreError),
        ("/var/lib/postroom/postroom.db", StoreError),
    ],
)
async def test_open_store_refuses(url: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        await open_store(url)


async def test_a_store_keeps_the_instance_id_it_was_made_with(backend: Backend) -> None:
    first = await backend.open()
    second = await backend.open()  # another process on the same database
    try:
        made = await first.instance_id()
        assert len(made) == 32 and made == await second.instance_id()
    finally:
        await first.aclose()
        await second.aclose()
