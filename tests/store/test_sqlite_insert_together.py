"""SQLite: the new messages of one group-commit batch are inserted together, one
statement per table (``queue.insert_together``), and stored whole; a bad one in the
batch fails alone."""

from __future__ import annotations

import asyncio

from postroom.errors import StoreError
from postroom.mail.address import Address
from postroom.mail.envelope import Recipient
from postroom.store.sqlite import SqliteStore
from tests.store.factories import BOB, new_message

CAROL = Recipient(Address("carol", "example.net"))


async def test_messages_inserted_together_are_stored_whole(sqlite_store: SqliteStore) -> None:
    messages = [
        new_message(f"Subject: {n}\r\n\r\nbody {n}\r\n".encode(), recipients=(BOB, CAROL))
        for n in range(10)
    ]
    before = sqlite_store.committer.commits
    await asyncio.gather(*(sqlite_store.enqueue(m) for m in messages))
    assert sqlite_store.committer.commits == before + 1  # one batch
    for message in messages:
        stored = await sqlite_store.message(message.id)
        assert stored is not None
        assert [str(r.address) for r in stored.recipients] == [
            "bob@example.net",
            "carol@example.net",
        ]
        assert await sqlite_store.read_body(message.id) == message.header + message.body.getvalue()


async def test_a_message_that_cannot_be_inserted_fails_alone(sqlite_store: SqliteStore) -> None:
    first = new_message()
    await sqlite_store.enqueue(first)
    again = new_message(message_id=first.id)  # the same queue id: its insert fails
    others = [new_message() for _ in range(3)]
    outcomes = await asyncio.gather(
        sqlite_store.enqueue(again),
        *(sqlite_store.enqueue(m) for m in others),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], StoreError)
    assert outcomes[1:] == [None, None, None]
    assert sqlite_store.committer.fallbacks == 1  # the batch failed whole, then ran job by job
    for message in others:
        assert await sqlite_store.message(message.id) is not None
