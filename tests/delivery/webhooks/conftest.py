from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from postroom.config.webhooks import WebhookSettings
from postroom.store.sqlite import SqliteStore
from tests.store.factories import NOW, attempt, delivered, new_message, to


@dataclass(frozen=True)
class Hooked:
    """The three things ``handle_webhook`` reads of a mailer's settings."""

    name: str
    type: str
    webhook: WebhookSettings | None


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "postroom.db")
    await store.start()
    yield store
    await store.aclose()


async def sent_through(store: SqliteStore, mailer: str, provider_id: str, *recipients: str) -> str:
    """A message whose attempt through ``mailer`` got ``provider_id``; its queue id."""
    message = new_message(recipients=to(*recipients))
    await store.enqueue(message)
    attempts = [
        dataclasses.replace(attempt(message.id, r, NOW, mailer=mailer), provider_id=provider_id)
        for r in recipients
    ]
    await store.record_outcomes(message.id, [delivered(r) for r in recipients], attempts)
    return message.id


def mailgun_event(key: bytes, timestamp: str, *, severity: str = "permanent") -> bytes:
    """A Mailgun "failed" event for <20270101.1@mg.example.org>, signed with ``key``."""
    token = secrets.token_hex(25)
    signature = hmac.new(key, (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps(
        {
            "signature": {"timestamp": timestamp, "token": token, "signature": signature},
            "event-data": {
                "event": "failed",
                "severity": severity,
                "timestamp": 1_800_000_010.25,
                "recipient": "bob@example.net",
                "message": {"headers": {"message-id": "20270101.1@mg.example.org"}},
                "delivery-status": {"code": 550, "description": "No such mailbox"},
            },
        }
    ).encode()
