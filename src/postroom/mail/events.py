"""The event catalogue: what happened to one recipient of one message, in one shape.

Every event postroom tells applications about (by outgoing webhook, ``docs/events.md``)
is a ``MailEvent``, whether postroom's own delivery saw it, a provider's callback told
it, a returned bounce reported it, or a tracked open or click, an unsubscribe or the
suppression list caused it. The types are the ones django-anymail normalizes providers
into, so an application that reads anymail's events reads these.

``as_json`` is the one place the documented JSON shape is written; ``from_json`` reads
it back (tests, ``postroom webhook history``). Tags, metadata, the Message-ID and the
envelope sender are the message's (given at send time); the store fills them in when it
reads an event, so whoever records one names only the message's queue id.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

__all__ = ["EVENT_TYPES", "EventOrigin", "EventType", "MailEvent", "iso_time", "new_event_id"]


class EventType(StrEnum):
    QUEUED = "queued"  # accepted into the queue
    SENT = "sent"  # handed to a relay (smarthost) or a provider's API
    DELIVERED = "delivered"  # the recipient's own server (or mailbox) took it
    DEFERRED = "deferred"  # a temporary failure; it is tried again
    BOUNCED = "bounced"  # a permanent failure (5xx, a returned bounce, a provider's bounce)
    REJECTED = "rejected"  # refused before sending (reason "suppressed")
    EXPIRED = "expired"  # deferred past the queue lifetime, given up
    COMPLAINED = "complained"  # the recipient marked it as spam (feedback loop)
    UNSUBSCRIBED = "unsubscribed"  # the recipient asked to get no more (List-Unsubscribe)
    OPENED = "opened"  # the tracking pixel was fetched
    CLICKED = "clicked"  # a tracked link was followed
    FAILED = "failed"  # postroom could not try at all (no route, a broken mailer setup)


EVENT_TYPES = frozenset(EventType)


class EventOrigin(StrEnum):
    """Who reported the event."""

    INTAKE = "intake"  # the message was queued, or a recipient refused at queueing
    DELIVERY = "delivery"  # postroom's own delivery attempt
    PROVIDER = "provider"  # a provider's webhook (``/hooks/{mailer}``)
    BOUNCE = "bounce"  # a returned bounce (DSN) that reached the mx listener
    TRACKING = "tracking"  # an open or click on ``/t/...``
    UNSUBSCRIBE = "unsubscribe"  # a List-Unsubscribe request


def new_event_id() -> str:
    """``ev_`` and 20 random hex digits: unique across nodes, not guessable."""
    return "ev_" + secrets.token_hex(10)


def iso_time(at: float) -> str:
    """The catalogue's time format: ISO 8601, UTC, milliseconds, ``Z``."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class MailEvent:
    """One event about one recipient of one message.

    ``queue_id`` is postroom's id of the message (None when a provider's callback names
    a message postroom does not know); ``reply`` is the remote reply or the provider's
    words; ``reason`` a short word for why (``suppressed``, ``hard_bounce``, ``complaint``,
    the provider's own event name); ``details`` what only some types carry (``url`` and
    ``user_agent`` for clicks and opens, ``machine`` when a scanner or a privacy proxy
    fetched it, ``host`` and ``ip`` of the server that answered)."""

    id: str
    type: EventType
    at: float  # seconds since the epoch
    recipient: str
    queue_id: str | None = None
    mailer: str | None = None
    reply: str = ""
    reason: str = ""
    origin: EventOrigin = EventOrigin.DELIVERY
    details: tuple[tuple[str, str], ...] = ()
    # The message's, filled in by the store when it reads the event:
    message_id: str | None = None  # the Message-ID field's value
    sender: str | None = None  # the envelope sender ("" for the null sender)
    tags: tuple[str, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The documented shape (``docs/events.md``): every key always present."""
        return {
            "id": self.id,
            "type": self.type.value,
            "timestamp": iso_time(self.at),
            "queue_id": self.queue_id,
            "message_id": self.message_id,
            "recipient": self.recipient,
            "sender": self.sender,
            "mailer": self.mailer,
            "reply": self.reply,
            "reason": self.reason,
            "origin": self.origin.value,
            "tags": list(self.tags),
            "metadata": dict(self.metadata),
            "details": dict(self.details),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MailEvent:
        """An event read back from ``as_json``'s shape (ValueError/KeyError when not)."""
        at = datetime.fromisoformat(str(data["timestamp"]).replace("Z", "+00:00")).timestamp()
        return cls(
            id=str(data["id"]),
            type=EventType(data["type"]),
            at=at,
            recipient=str(data["recipient"]),
            queue_id=data.get("queue_id"),
            mailer=data.get("mailer"),
            reply=str(data.get("reply") or ""),
            reason=str(data.get("reason") or ""),
            origin=EventOrigin(data.get("origin", EventOrigin.DELIVERY.value)),
            details=tuple((str(k), str(v)) for k, v in dict(data.get("details") or {}).items()),
            message_id=data.get("message_id"),
            sender=data.get("sender"),
            tags=tuple(str(t) for t in data.get("tags") or ()),
            metadata=tuple((str(k), str(v)) for k, v in dict(data.get("metadata") or {}).items()),
        )
