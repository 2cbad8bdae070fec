"""Returned mail at the mx listener: consumed, never queued for a mailbox.

Intake hands ``ReturnDesk.consume`` the whole message when every recipient of the
transaction is a bounce address of ours (``Links.returned``). The report is read
(``mail.returned``), linked to the message it is about (the VERP token's queue id; else
the queue id in the returned copy's Message-ID, which postroom writes as
``<QUEUEID.random@host>``), and for each failed recipient of that message a ``bounced``
event is recorded; a hard one adds the address to the suppression list. Auto-replies and
anything else are logged and dropped: the bounce address is no one's mailbox.

A report about an address the linked message was not sent to (or one no message is
found for) is logged, never suppressed: only a token we signed, or a Message-ID we wrote
naming one of our recipients, may take an address off the list of the living.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from postroom.clock import Clock
from postroom.config.feedback import BounceSettings
from postroom.feedback.links import Links
from postroom.mail.address import Address
from postroom.mail.events import EventOrigin, EventType, MailEvent, new_event_id
from postroom.mail.returned import BouncedRecipient, Returned, ReturnedKind, read_returned
from postroom.smtp.replies import Reply
from postroom.store.base import EventStore, QueueStore, SuppressionStore
from postroom.store.models import GLOBAL_SCOPE, Suppression, SuppressionReason

__all__ = ["CONSUMED", "ReturnDesk", "ReturnStore"]

_log = logging.getLogger("postroom.returns")

CONSUMED = Reply(250, "2.0.0", "Ok: report received")
_OUR_MESSAGE_ID = re.compile(r"^<([0-9A-Z]{16})\.[0-9a-f]+@")


class ReturnStore(QueueStore, EventStore, SuppressionStore, Protocol):
    """What the desk uses: the message a report names, the outbox, the suppression list."""


@dataclass(frozen=True, slots=True)
class ReturnDesk:
    links: Links
    store: ReturnStore
    clock: Clock
    settings: BounceSettings

    def claims(self, address: Address) -> bool:
        return self.links.returned(address) is not None

    async def consume(self, recipients: Sequence[Address], data: bytes) -> Reply:
        """Read and record one returned message; the reply for its end of data, given
        only once what it caused is durable."""
        returned = read_returned(data[: self.settings.max_size])
        if returned.kind is not ReturnedKind.BOUNCE:
            _log.info("returned mail to %s dropped: %s", recipients[0], returned.kind.value)
            return CONSUMED
        queue_id = self._queue_id(recipients, returned)
        sent_to = await self._recipients_of(queue_id)
        now = self.clock.time()
        events: list[MailEvent] = []
        listed: list[Suppression] = []
        for bounced in returned.recipients:
            if bounced.action != "failed":
                continue  # a delay warning: the remote server is still trying
            address = _linked(bounced, sent_to)
            if address is None:
                _log.info(
                    "returned report for %s names no message of ours (queue id %s)",
                    bounced.address,
                    queue_id or "unknown",
                )
                continue
            events.append(_bounced_event(bounced, address, queue_id, now, returned))
            if bounced.hard and self.settings.suppress:
                listed.append(_suppression(bounced, address, queue_id, now))
        if events:
            await self.store.record_events(events)
        for entry in listed:
            await self.store.add_suppression(entry)
        return CONSUMED

    def _queue_id(self, recipients: Sequence[Address], returned: Returned) -> str | None:
        for address in recipients:
            if queue_id := self.links.returned(address):
                return queue_id
        match = _OUR_MESSAGE_ID.match(returned.original_message_id or "")
        return match.group(1) if match else None

    async def _recipients_of(self, queue_id: str | None) -> dict[str, str]:
        """The linked message's recipients, by lower-case address; empty when none."""
        if queue_id is None:
            return {}
        stored = await self.store.message(queue_id)
        if stored is None:
            return {}
        return {r.address.lower(): r.address for r in stored.recipients}


def _linked(bounced: BouncedRecipient, sent_to: dict[str, str]) -> str | None:
    """The recipient of ours the report speaks of: the one it names, or the message's
    only recipient when the report names the address it was forwarded to."""
    if bounced.address in sent_to:
        return sent_to[bounced.address]
    if len(sent_to) == 1:
        return next(iter(sent_to.values()))
    return None


def _bounced_event(
    bounced: BouncedRecipient, address: str, queue_id: str | None, now: float, returned: Returned
) -> MailEvent:
    details = [("status", bounced.status), ("action", bounced.action)]
    if returned.reporting_mta:
        details.append(("reporting_mta", returned.reporting_mta))
    if bounced.remote_mta:
        details.append(("remote_mta", bounced.remote_mta))
    if bounced.address != address.lower():
        details.append(("final_recipient", bounced.address))
    return MailEvent(
        id=new_event_id(),
        type=EventType.BOUNCED,
        at=now,
        recipient=address,
        queue_id=queue_id,
        reply=f"{bounced.status} {bounced.diagnostic}".strip(),
        reason="hard_bounce" if bounced.hard else "soft_bounce",
        origin=EventOrigin.BOUNCE,
        details=tuple(details),
    )


def _suppression(
    bounced: BouncedRecipient, address: str, queue_id: str | None, now: float
) -> Suppression:
    return Suppression(
        address=address.lower(),
        scope=GLOBAL_SCOPE,  # the address does not exist: no sender can reach it
        reason=SuppressionReason.HARD_BOUNCE,
        source=f"bounce {queue_id}",
        created_at=now,
        detail=f"{bounced.status} {bounced.diagnostic}".strip(),
    )
