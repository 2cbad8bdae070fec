"""What a kill -9 amid delivery may leave, checked the same for every way out: every
acknowledged message arrives, none more than twice, and only a message whose delivery
was not yet recorded arrives twice (the duplicate window docs/architecture.md names).
Messages are told apart by a token in their Subject."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from postroom.store import RecipientStatus, open_store

__all__ = ["assert_at_least_once", "tokens", "unsettled"]


def tokens(messages: Iterable[bytes], subject: re.Pattern[bytes]) -> Counter[str]:
    """How many copies of each token ``messages`` hold (``subject``'s first group)."""
    copies: Counter[str] = Counter()
    for data in messages:
        match = subject.search(data.replace(b"\r\n", b"\n"))
        assert match is not None, data[:200]
        copies[match.group(1).decode()] += 1
    return copies


async def unsettled(db: Path, subject: re.Pattern[bytes]) -> set[str]:
    """Tokens of the messages whose first recipient is not yet recorded delivered."""
    store = await open_store(f"sqlite:///{db}")
    try:
        pending: list[bytes] = []
        for message in await store.messages(limit=100_000):
            if message.recipients[0].status is not RecipientStatus.DELIVERED:
                data = await store.read_body(message.id)
                assert data is not None
                pending.append(data)
        return set(tokens(pending, subject))
    finally:
        await store.aclose()


def assert_at_least_once(acked: set[str], copies: Counter[str], not_recorded: set[str]) -> None:
    assert set(acked) <= set(copies), "an acknowledged message is missing"
    repeated = {token for token, count in copies.items() if count > 1}
    assert max(copies.values()) <= 2
    assert repeated <= not_recorded, "a message recorded as delivered was delivered again"
