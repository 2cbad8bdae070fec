"""Brevo's transactional webhooks: one JSON object per event (or an array of them)."""

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
        "delivered": EventStatus.DELIVERED,
        "hard_bounce": EventStatus.BOUNCED,
        "blocked": EventStatus.BOUNCED,
        "invalid_email": EventStatus.BOUNCED,
        "error": EventStatus.BOUNCED,
        "soft_bounce": EventStatus.DEFERRED,
        "deferred": EventStatus.DEFERRED,
        "spam": EventStatus.COMPLAINED,
        "complaint": EventStatus.COMPLAINED,
        "opened": EventStatus.OPENED,
        "unique_opened": EventStatus.OPENED,
        "proxy_open": EventStatus.OPENED,
        "unique_proxy_open": EventStatus.OPENED,
        "click": EventStatus.CLICKED,
    }
)


def parse(body: bytes, *, now: float) -> list[ProviderEvent]:
    data = load_json(body)
    items = data if isinstance(data, list) else [data]
    return [event for item in items if (event := _event(item, now)) is not None]


def _event(item: Any, now: float) -> ProviderEvent | None:
    if not isinstance(item, dict) or "event" not in item:
        raise PayloadError("a Brevo webhook is a JSON object with an 'event'")
    message_id, recipient = text(item.get("message-id")), text(item.get("email"))
    if not message_id or not recipient:
        return None
    kind = text(item["event"])
    return ProviderEvent(
        provider_message_id=message_id,
        recipient=recipient,
        status=STATUSES.get(kind, EventStatus.OTHER),
        at=number(item.get("ts_event", item.get("ts")), now),
        detail=text(item.get("reason")),
        kind=kind,
    )
