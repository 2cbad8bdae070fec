"""SendLayer's webhooks: one JSON object per event.

The message id is ``Message.Headers.MessageId``, the ``MessageID`` of the send answer.
Event names appear both as subscribed ("delivery", "bounce") and as past tense
("delivered", "bounced"); both are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from postroom.delivery.webhooks.events import (
    EventStatus,
    PayloadError,
    ProviderEvent,
    load_json,
    number,
    text,
)

__all__ = ["STATUSES", "parse"]

STATUSES: Final[Mapping[str, EventStatus]] = MappingProxyType(
    {
        "delivery": EventStatus.DELIVERED,
        "delivered": EventStatus.DELIVERED,
        "bounce": EventStatus.BOUNCED,
        "bounced": EventStatus.BOUNCED,
        "complaint": EventStatus.COMPLAINED,
        "complained": EventStatus.COMPLAINED,
        "open": EventStatus.OPENED,
        "opened": EventStatus.OPENED,
        "click": EventStatus.CLICKED,
        "clicked": EventStatus.CLICKED,
    }
)


def parse(body: bytes, *, now: float) -> list[ProviderEvent]:
    data = load_json(body)
    if isinstance(data, dict) and isinstance(data.get("EventData"), dict):
        data = data["EventData"]
    if not isinstance(data, dict) or "Event" not in data:
        raise PayloadError("a SendLayer webhook is a JSON object with an 'Event'")
    message = data.get("Message")
    headers = message.get("Headers") if isinstance(message, dict) else None
    message_id = text(headers.get("MessageId") if isinstance(headers, dict) else None)
    recipient = text(data.get("Recipient"))
    if not message_id or not recipient:
        return []
    kind = text(data["Event"]).lower()
    return [
        ProviderEvent(
            provider_message_id=message_id,
            recipient=recipient,
            status=STATUSES.get(kind, EventStatus.OTHER),
            at=number(data.get("LoggedAt"), now),
            detail=text(data.get("Reason")),
            kind=kind,
        )
    ]
