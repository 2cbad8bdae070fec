"""Admins of the dashboard: their own accounts, checked like users' in constant work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from postroom.directory import Admins, passwords
from postroom.errors import DirectoryError
from postroom.store.sqlite import SqliteStore


@pytest.fixture
async def admins(tmp_path: Path) -> AsyncIterator[Admins]:
    store = SqliteStore(tmp_path / "db")
    await store.start()
    yield Admins(store)
    await store.aclose()


async def test_the_right_password_logs_in_and_a_wrong_one_does_not(admins: Admins) -> None:
    await admins.add("ada", "pw-123")
    found = await admins.verify("ada", "pw-123")
    assert found is not None and found.name == "ada"
    assert await admins.verify("ada", "pw-124") is None
    with pytest.raises(DirectoryError, match="already exists"):
        await admins.add("ada", "other")


async def test_an_unknown_or_malformed_name_costs_a_verification_too(
    admins: Admins, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    real = passwords.verify_password_async

    async def counting(password_hash: str, password: str) -> bool:
        checked.append(password_hash)
        return await real(password_hash, password)

    monkeypatch.setattr(passwords, "verify_password_async", counting)
    assert await admins.verify("nobody", "guess") is None
    assert await admins.verify("not a name", "guess") is None
    assert len(checked) == 2 and checked[0].startswith("$argon2id$")


async def test_a_new_password_ends_the_open_sessions(admins: Admins) -> None:
    record = await admins.add("ada", "pw-123")
    await admins.passwd("ada", "pw-456")
    assert await admins.verify("ada", "pw-123") is None
    found = await admins.verify("ada", "pw-456")
    assert found is not None and found.sessions_after >= record.created_at
