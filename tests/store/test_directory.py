"""The directory part of the Store contract: local domains, users and RCPT's lookup."""

from __future__ import annotations

import pytest

from postroom.store import (
    DirectoryStore,
    Store,
    UserRecord,
)
from tests.store.conftest import Backend
from tests.store.factories import HEADER, NOW, new_message

pytestmark = pytest.mark.store_parts("directory")


async def test_domains(store: DirectoryStore) -> None:
    assert await store.domains() == []
    assert await store.add_domain("example.org", NOW) is True
    assert await store.add_domain("xn--bcher-kva.example", NOW) is True
    assert await store.add_domain("example.org", NOW) is False
    assert await store.domains() == ["example.org", "xn--bcher-kva.example"]
    assert await store.is_local_domain("example.org") is True
    assert await store.is_local_domain("example.net") is False
    assert await store.remove_domain("example.org") is True
    assert await store.remove_domain("example.org") is False
    assert await store.is_local_domain("example.org") is False
    assert await store.domains() == ["xn--bcher-kva.example"]


async def test_users(store: DirectoryStore) -> None:
    app = UserRecord("app@example.org", "$argon2id$one", ("example.org", "example.net"), NOW)
    bob = UserRecord("bob@example.org", "$argon2id$two", (), NOW + 1)
    assert await store.user(app.address) is None
    assert await store.add_user(bob) is True
    assert await store.add_user(app) is True
    assert await store.add_user(UserRecord(app.address, "other", (), NOW)) is False
    assert await store.user(app.address) == app
    assert await store.users() == [app, bob]
    assert await store.set_password(bob.address, "$argon2id$new") is True
    assert await store.set_password("nobody@example.org", "x") is False
    assert await store.user(bob.address) == UserRecord(bob.address, "$argon2id$new", (), NOW + 1)
    assert await store.remove_user(app.address) is True
    assert await store.remove_user(app.address) is False
    assert await store.users() == [UserRecord(bob.address, "$argon2id$new", (), NOW + 1)]


async def test_user_sender_rights_are_stored_and_replaced(store: DirectoryStore) -> None:
    anyone = UserRecord("any@example.org", "h", (), NOW, any_sender=True)
    assert await store.add_user(anyone)
    assert await store.user(anyone.address) == anyone
    assert await store.set_user_senders(anyone.address, ["example.net"], False) is True
    assert await store.user(anyone.address) == UserRecord(
        anyone.address, "h", ("example.net",), NOW, any_sender=False
    )
    assert await store.set_user_senders("nobody@example.org", [], True) is False


async def test_recipient_lookup(store: DirectoryStore) -> None:
    await store.add_user(UserRecord("app@example.org", "h", (), NOW))
    assert await store.recipient("example.org", "app@example.org") == (False, False)
    await store.add_domain("example.org", NOW)
    assert await store.recipient("example.org", "app@example.org") == (True, True)
    assert await store.recipient("EXAMPLE.org", "app@example.org") == (True, True)
    assert await store.recipient("example.org", "ghost@example.org") == (True, False)
    assert await store.recipient("example.net", "app@example.org") == (False, False)


@pytest.mark.store_parts("queue")
async def test_a_second_process_sees_writes_at_once(store: Store, backend: Backend) -> None:
    cli = await backend.open()
    assert await store.add_domain("example.org", NOW) is True
    assert await cli.is_local_domain("example.org") is True
    assert await cli.add_user(UserRecord("app@example.org", "h", (), NOW)) is True
    assert await store.user("app@example.org") is not None
    assert await store.add_user(UserRecord("app@example.org", "h2", (), NOW)) is False
    await cli.remove_domain("example.org")
    assert await store.is_local_domain("example.org") is False
    message = new_message()
    await cli.enqueue(message)
    assert await store.read_body(message.id) == HEADER + b"Subject: hi\r\n\r\nHello\r\n"
    await store.enqueue(other := new_message(at=NOW + 1))
    assert [m.id for m in await cli.messages()] == [message.id, other.id]
