"""A real SQLite store with faults switched on and off by a test (not a real full disk)."""

from __future__ import annotations

from collections.abc import Sequence

from postroom.errors import StoreError
from postroom.mail.events import MailEvent
from postroom.store.models import Attempt, Claim, RecipientUpdate
from postroom.store.sqlite import SqliteStore

__all__ = ["FaultyStore"]


class FaultyStore(SqliteStore):
    """While ``claim_fault`` / ``record_fault`` / ``body_fault`` / ``recipient_fault`` is
    set, claims / outcome writes / body reads / RCPT's recipient lookups raise it (and
    are counted); otherwise the real store answers."""

    claim_fault: StoreError | None = None
    record_fault: StoreError | None = None
    body_fault: StoreError | None = None
    recipient_fault: StoreError | None = None
    refused_claims = 0
    refused_records = 0
    refused_bodies = 0

    async def recipient(self, domain: str, address: str) -> tuple[bool, bool]:
        if self.recipient_fault is not None:
            raise self.recipient_fault
        return await super().recipient(domain, address)

    async def read_body(self, message_id: str) -> bytes | None:
        if self.body_fault is not None:
            self.refused_bodies += 1
            raise self.body_fault
        return await super().read_body(message_id)

    async def claim_due(self, now: float, *, limit: int, lease: float) -> list[Claim]:
        if self.claim_fault is not None:
            self.refused_claims += 1
            raise self.claim_fault
        return await super().claim_due(now, limit=limit, lease=lease)

    async def record_outcomes(
        self,
        message_id: str,
        updates: Sequence[RecipientUpdate],
        attempts: Sequence[Attempt],
        events: Sequence[MailEvent] = (),
    ) -> None:
        if self.record_fault is not None:
            self.refused_records += 1
            raise self.record_fault
        await super().record_outcomes(message_id, updates, attempts, events)
