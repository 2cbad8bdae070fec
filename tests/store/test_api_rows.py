"""The Store contract, HTTP API side: API keys, message meta, Idempotency-Key answers."""

from __future__ import annotations

import pytest

from postroom.store import Store
from postroom.store.models import ApiKeyRecord, IdempotencyRecord, MessageMeta
from tests.store.conftest import Backend
from tests.store.factories import NOW, new_message

pytestmark = pytest.mark.store_parts("api", "queue")

KEY = ApiKeyRecord(
    "shop", "abcdefghijklmnop", "ff" * 32, ("example.com",), NOW, ("send", "read-all", "queue")
)


async def test_api_keys_are_added_once_found_by_id_listed_and_removed(store: Store) -> None:
    assert await store.add_api_key(KEY)
    assert not await store.add_api_key(KEY)  # same name
    other = ApiKeyRecord("app", "qrstuvwxyz012345", "00" * 32, (), NOW)
    assert await store.add_api_key(other)
    assert await store.api_key(KEY.key_id) == KEY  # scopes included
    assert (await store.api_key(other.key_id)) == other
    assert other.scopes == ("send", "read")
    assert await store.api_key("nope") is None
    assert [k.name for k in await store.api_keys()] == ["app", "shop"]
    assert await store.remove_api_key("shop")
    assert not await store.remove_api_key("shop")
    assert await store.api_key(KEY.key_id) is None


async def test_meta_and_answer_are_saved_together_and_read_back(store: Store) -> None:
    message = new_message()
    await store.enqueue(message)
    meta = MessageMeta(message.id, "<m@x>", "Grüße", ("a", "b"), (("order", "1"),))
    answer = IdempotencyRecord("shop", "k1", "h" * 64, 202, b'{"id": "X"}', NOW)
    await store.save_send(meta, answer, forget_before=NOW - 10)
    assert await store.message_meta([message.id, "OTHER"]) == {message.id: meta}
    assert await store.idempotent("shop", "k1", NOW - 1) == answer
    assert await store.idempotent("shop", "k1", NOW + 1) is None  # older than asked
    assert await store.idempotent("app", "k1", 0) is None  # per API key


async def test_meta_of_a_deleted_message_is_not_kept(store: Store, backend: Backend) -> None:
    message = new_message()
    await store.enqueue(message)
    await store.delete(message.id)
    await store.save_send(MessageMeta(message.id, "<m@x>", None), None, forget_before=0)
    assert await store.message_meta([message.id]) == {}
    kept = new_message(message_id="KEPTKEPTKEPTKEPT")
    await store.enqueue(kept)
    await store.save_send(MessageMeta(kept.id, None, None), None, forget_before=0)
    await store.delete(kept.id)
    assert await store.message_meta([kept.id]) == {}  # deleted with its message


async def test_old_answers_are_forgotten_on_the_next_save(store: Store) -> None:
    message = new_message()
    await store.enqueue(message)
    old = IdempotencyRecord("shop", "old", "h", 202, b"{}", NOW - 100)
    meta = MessageMeta(message.id, None, None)
    await store.save_send(meta, old, forget_before=0)
    assert await store.idempotent("shop", "old", 0) is not None
    await store.save_send(meta, None, forget_before=NOW - 50)
    assert await store.idempotent("shop", "old", 0) is None


async def test_api_key_sender_rights_are_stored_and_replaced(store: Store) -> None:
    anyone = ApiKeyRecord("relay", "qrstuvwxyzabcdef", "ee" * 32, (), NOW, any_sender=True)
    assert await store.add_api_key(anyone)
    assert await store.api_key(anyone.key_id) == anyone
    assert await store.set_api_key_senders("relay", ["example.net"], False) is True
    assert await store.api_key(anyone.key_id) == ApiKeyRecord(
        "relay", anyone.key_id, anyone.secret_hash, ("example.net",), NOW, any_sender=False
    )
    assert await store.set_api_key_senders("nope", [], True) is False
