"""Mailgun's webhooks: one JSON object, signed with the account's webhook signing key.

``signature.signature`` is the hex HMAC-SHA256 of ``timestamp + token`` (no separator).
The message id is the ``Message-Id`` header without angle brackets; the send answer's
``id`` has them, so both are compared without.
"""

from __future__ import annotations

import hashlib
import hmac
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

__all__ = ["STATUSES", "parse", "verify"]

STATUSES: Final[Mapping[str, EventStatus]] = MappingProxyType(
    {
        "delivered": EventStatus.DELIVERED,
        "rejected": EventStatus.BOUNCED,
        "complained": EventStatus.COMPLAINED,
        "opened": EventStatus.OPENED,
        "clicked": EventStatus.CLICKED,
        # "failed" depends on severity: see _status
    }
)


def verify(body: bytes, key: bytes, *, now: float, tolerance: float) -> bool:
    try:
        signed = _object(body).get("signature")
    except PayloadError:
        return False
    if not isinstance(signed, dict):
        return False
    timestamp, token, signature = (
        text(signed.get("timestamp")),
        text(signed.get("token")),
        text(signed.get("signature")),
    )
    if not (timestamp and token and signature):
        return False
    if abs(now - number(timestamp, float("inf"))) > tolerance:
        return False
    expected = hmac.new(key, (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature.lower())


def parse(body: bytes, *, now: float) -> list[ProviderEvent]:
    data = _object(body)
    event = data.get("event-data")
    if not isinstance(event, dict):
        raise PayloadError("a Mailgun webhook carries an 'event-data' object")
    message = event.get("message") or {}
    headers = message.get("headers") if isinstance(message, dict) else None
    message_id = text(headers.get("message-id") if isinstance(headers, dict) else None)
    recipient = text(event.get("recipient"))
    if not message_id or not recipient:
        return []
    status = event.get("delivery-status")
    detail = ""
    if isinstance(status, dict):
        detail = text(status.get("description") or status.get("message"))
    kind = text(event.get("event"))
    return [
        ProviderEvent(
            provider_message_id=message_id.strip("<>"),
            recipient=recipient,
            status=_status(kind, event),
            at=number(event.get("timestamp"), now),
            detail=detail or text(event.get("reason")),
            kind=kind,
        )
    ]


def _status(kind: str, event: dict[str, Any]) -> EventStatus:
    if kind == "failed":
        permanent = event.get("severity") == "permanent"
        return EventStatus.BOUNCED if permanent else EventStatus.DEFERRED
    return STATUSES.get(kind, EventStatus.OTHER)


def _object(body: bytes) -> dict[str, Any]:
    data = load_json(body)
    if not isinstance(data, dict):
        raise PayloadError("Mailgun posts one JSON object")
    return data
