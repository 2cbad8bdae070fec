"""The Store contract, dashboard side: administrators and the audit log of their actions."""

from __future__ import annotations

import pytest

from postroom.store import Store
from postroom.store.models import AdminAction, AdminRecord
from tests.store.conftest import Backend
from tests.store.factories import NOW

pytestmark = pytest.mark.store_parts("admin")

ADA = AdminRecord("ada", "$argon2id$hash", NOW)


async def test_admins_are_added_once_listed_by_name_and_removed(store: Store) -> None:
    assert await store.add_admin(ADA)
    assert not await store.add_admin(AdminRecord("ada", "other", NOW + 1))  # same name
    assert await store.add_admin(AdminRecord("bob", "h", NOW))
    assert await store.admin("ada") == ADA
    assert await store.admin("nobody") is None
    assert [a.name for a in await store.admins()] == ["ada", "bob"]
    assert await store.remove_admin("ada")
    assert not await store.remove_admin("ada")
    assert [a.name for a in await store.admins()] == ["bob"]


async def test_a_password_change_is_kept(store: Store) -> None:
    await store.add_admin(ADA)
    assert await store.set_admin_password("ada", "new")
    assert not await store.set_admin_password("nobody", "new")
    found = await store.admin("ada")
    assert found is not None and found.password_hash == "new"


async def test_ending_sessions_only_moves_forward(store: Store) -> None:
    await store.add_admin(ADA)
    assert await store.end_admin_sessions("ada", NOW + 10)
    assert await store.end_admin_sessions("ada", NOW + 5)  # found, but not moved back
    found = await store.admin("ada")
    assert found is not None and found.sessions_after == NOW + 10
    assert not await store.end_admin_sessions("nobody", NOW)


async def test_admin_actions_are_kept_and_read_newest_first(store: Store, backend: Backend) -> None:
    for i, action in enumerate(("login", "hold", "release")):
        await store.record_admin_action(AdminAction(NOW + i, "ada", action, "Q1", "127.0.0.1"))
    other = await backend.open()  # another process sees them: they are durable
    actions = await other.admin_actions(limit=2)
    assert [a.action for a in actions] == ["release", "hold"]
    assert actions[0] == AdminAction(NOW + 2, "ada", "release", "Q1", "127.0.0.1")
    older = await other.admin_actions(limit=10, before=actions[-1].at)
    assert [a.action for a in older] == ["login"]
    assert await other.admin_actions(limit=0) == []
