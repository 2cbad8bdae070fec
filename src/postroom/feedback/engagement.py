"""What readers do with delivered mail: opens (the pixel fetched), clicks (a tracked link
followed) and unsubscribes (RFC 8058 one-click, or the confirmation page's button).

``/t/...`` (``api.tracking``) hands each request's token and user agent here; a token
that is not ours is None (the API answers 404, no event). An open or click is recorded
as an ``opened``/``clicked`` event with ``machine`` set when the fetcher was a privacy
proxy or a link scanner (``mail.tracking.is_machine``: its user agent, or a fetch within
``tracking.machine_window`` seconds of delivery). An unsubscribe is recorded as
``unsubscribed`` and puts the recipient on the suppression list for the sender's domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from postroom.clock import Clock
from postroom.config.feedback import TrackingSettings
from postroom.feedback.links import Link, LinkKind, Links
from postroom.mail.events import EventOrigin, EventType, MailEvent, new_event_id
from postroom.mail.tracking import is_machine
from postroom.store.base import EventStore, LogStore, QueueStore, SuppressionStore
from postroom.store.models import Suppression, SuppressionReason

__all__ = ["EngagementDesk", "EngagementStore"]


class EngagementStore(QueueStore, LogStore, EventStore, SuppressionStore, Protocol):
    """The message a token names, its attempts (when it was delivered), the outbox and
    the suppression list."""


_TYPES = {LinkKind.OPEN: EventType.OPENED, LinkKind.CLICK: EventType.CLICKED}


@dataclass(frozen=True, slots=True)
class EngagementDesk:
    links: Links
    store: EngagementStore
    clock: Clock
    settings: TrackingSettings

    async def fetched(self, kind: LinkKind, token: str, user_agent: str) -> Link | None:
        """Record an open or a click; the link (a click's URL to redirect to), or None
        when the token is not ours or its message is gone."""
        link = self.links.read(kind, token)
        if link is None or await self.store.message(link.queue_id) is None:
            return None
        now = self.clock.time()
        since = await self._since_delivery(link, now)
        machine = is_machine(user_agent, since_delivery=since, window=self.settings.machine_window)
        details = [("user_agent", user_agent), ("machine", "true" if machine else "false")]
        if machine:
            details.append(("machine_reason", machine))
        if link.url:
            details.append(("url", link.url))
        await self.store.record_events(
            [
                MailEvent(
                    id=new_event_id(),
                    type=_TYPES[kind],
                    at=now,
                    recipient=link.recipient,
                    queue_id=link.queue_id,
                    reason="machine" if machine else "",
                    origin=EventOrigin.TRACKING,
                    details=tuple(details),
                )
            ]
        )
        return link

    def unsubscribe_link(self, token: str) -> Link | None:
        """What an unsubscribe token names (for the confirmation page), not recorded."""
        link = self.links.read(LinkKind.UNSUBSCRIBE, token)
        return link if link is not None and link.recipient else None

    async def unsubscribe(self, token: str, how: str) -> Link | None:
        """Record the unsubscribe and suppress the recipient for the sender's domain
        (``how``: "one-click" or "page"). Repeated, it changes nothing more."""
        link = self.unsubscribe_link(token)
        if link is None:
            return None
        now = self.clock.time()
        entry = Suppression(
            address=link.recipient.lower(),
            scope=link.scope,
            reason=SuppressionReason.UNSUBSCRIBE,
            source=f"unsubscribe {link.queue_id}",
            created_at=now,
            detail=how,
        )
        if await self.store.add_suppression(entry):
            await self.store.record_events(
                [
                    MailEvent(
                        id=new_event_id(),
                        type=EventType.UNSUBSCRIBED,
                        at=now,
                        recipient=link.recipient,
                        queue_id=link.queue_id,
                        reason=how,
                        origin=EventOrigin.UNSUBSCRIBE,
                        details=(("scope", link.scope),),
                    )
                ]
            )
        return link

    async def _since_delivery(self, link: Link, now: float) -> float | None:
        """Seconds since the message was delivered to the link's recipient (to anyone,
        for a message to several), or None when no delivery is on record."""
        delivered = [
            a.at + a.duration
            for a in await self.store.attempts(link.queue_id)
            if a.disposition == "delivered"
            and (not link.recipient or a.recipient.lower() == link.recipient.lower())
        ]
        return now - max(delivered) if delivered else None
