"""Postmark's webhooks: one JSON object per POST, its kind in ``RecordType``."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from postroom.delivery.webhooks.events import (
    EventStatus,
    PayloadError,
    ProviderEvent,
    iso_time,
    load_json,
    text,
)

__all__ = ["BOUNCE_TYPES", "RECORD_TYPES", "parse"]

RECORD_TYPES: Final[Mapping[str, EventStatus]] = MappingProxyType(
    {
        "Delivery": EventStatus.DELIVERED,
        "SpamComplaint": EventStatus.COMPLAINED,
        "Open": EventStatus.OPENED,
        "Click": EventStatus.CLICKED,
    }
)
# Bounce "Type"s that are not final; every other bounce type is.
BOUNCE_TYPES: Final[Mapping[str, EventStatus]] = MappingProxyType(
    {
        "Transient": EventStatus.DEFERRED,
        "DnsError": EventStatus.DEFERRED,
        "SoftBounce": EventStatus.DEFERRED,
        "AutoResponder": EventStatus.OTHER,
        "SpamNotification": EventStatus.COMPLAINED,
    }
)
_TIMES: Final = ("DeliveredAt", "BouncedAt", "ReceivedAt")


def parse(body: bytes, *, now: float) -> list[ProviderEvent]:
    data = load_json(body)
    if not isinstance(data, dict) or not isinstance(data.get("RecordType"), str):
        raise PayloadError("a Postmark webhook is a JSON object with a 'RecordType'")
    kind = data["RecordType"]
    if kind == "Bounce":
        status = BOUNCE_TYPES.get(text(data.get("Type")), EventStatus.BOUNCED)
        kind = f"Bounce/{text(data.get('Type'))}"
    else:
        status = RECORD_TYPES.get(kind, EventStatus.OTHER)
    recipient = text(data.get("Recipient") or data.get("Email"))
    message_id = text(data.get("MessageID"))
    if not recipient or not message_id:
        return []
    at = next((iso_time(data[k], now) for k in _TIMES if k in data), now)
    detail = text(data.get("Details") or data.get("Description"))
    return [ProviderEvent(message_id, recipient, status, at, detail, kind)]
