"""Mailjet's Event API: one JSON object per event, or (version 2) an array of them.

``MessageID`` is the per-recipient id of the Send API v3.1 answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

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
        "sent": EventStatus.DELIVERED,  # accepted by the recipient's server
        "blocked": EventStatus.BOUNCED,
        "spam": EventStatus.COMPLAINED,
        "open": EventStatus.OPENED,
        "click": EventStatus.CLICKED,
        # "bounce": hard_bounce decides, see _event
    }
)


def parse(body: bytes, *, now: float) -> list[ProviderEvent]:
    data = load_json(body)
    items = data if isinstance(data, list) else [data]
    return [event for item in items if (event := _event(item, now)) is not None]


def _event(item: Any, now: float) -> ProviderEvent | None:
    if not isinstance(item, dict) or "event" not in item:
        raise PayloadError("a Mailjet event is a JSON object with an 'event'")
    kind = text(item["event"])
    message_id, recipient = text(item.get("MessageID")), text(item.get("email"))
    if not message_id or not recipient:
        return None
    if kind == "bounce":
        status = EventStatus.BOUNCED if item.get("hard_bounce") else EventStatus.DEFERRED
    else:
        status = STATUSES.get(kind, EventStatus.OTHER)
    detail = " ".join(filter(None, (text(item.get("error_related_to")), text(item.get("error")))))
    return ProviderEvent(message_id, recipient, status, number(item.get("time"), now), detail, kind)
