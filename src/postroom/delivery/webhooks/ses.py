"""Amazon SES events as delivered by SNS: the SNS envelope's ``Message`` is the event.

Configuration-set events name their kind in ``eventType``; the older identity
notifications in ``notificationType``. Both carry ``mail.messageId``, the ``MessageId``
of the send answer, and name the recipients each event is about.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from postroom.delivery.webhooks.events import (
    EventStatus,
    PayloadError,
    ProviderEvent,
    iso_time,
    load_json,
    text,
)

__all__ = ["envelope", "parse"]

Recipients = Callable[[dict[str, Any]], list[tuple[str, str]]]


def _listed(section: str, field: str, detail: str = "") -> Recipients:
    """(recipient, detail) pairs from ``event[section][field]``, a list of objects or strings."""

    def recipients(event: dict[str, Any]) -> list[tuple[str, str]]:
        part = event.get(section) or {}
        found = []
        for item in part.get(field) or ():
            if isinstance(item, dict):
                found.append((text(item.get("emailAddress")), text(item.get(detail))))
            else:
                found.append((text(item), text(part.get(detail))))
        return found

    return recipients


def _all(event: dict[str, Any]) -> list[tuple[str, str]]:
    mail = event.get("mail") or {}
    reason = text((event.get("reject") or {}).get("reason"))
    return [(text(rcpt), reason) for rcpt in mail.get("destination") or ()]


# event type -> (status, who it is about)
_KINDS: Final[Mapping[str, tuple[EventStatus, Recipients]]] = MappingProxyType(
    {
        "Delivery": (EventStatus.DELIVERED, _listed("delivery", "recipients", "smtpResponse")),
        "Bounce": (EventStatus.BOUNCED, _listed("bounce", "bouncedRecipients", "diagnosticCode")),
        "Complaint": (EventStatus.COMPLAINED, _listed("complaint", "complainedRecipients")),
        "DeliveryDelay": (
            EventStatus.DEFERRED,
            _listed("deliveryDelay", "delayedRecipients", "diagnosticCode"),
        ),
        "Reject": (EventStatus.BOUNCED, _all),
        "Open": (EventStatus.OPENED, _all),
        "Click": (EventStatus.CLICKED, _all),
    }
)


def envelope(body: bytes) -> dict[str, Any]:
    data = load_json(body)
    if not isinstance(data, dict) or not isinstance(data.get("Type"), str):
        raise PayloadError("an SNS message is a JSON object with a 'Type'")
    return data


def parse(message: dict[str, Any], *, now: float) -> list[ProviderEvent]:
    """The events in a verified SNS Notification."""
    try:
        event = json.loads(str(message.get("Message")))
    except json.JSONDecodeError:
        raise PayloadError("the SNS Message is not an SES event") from None
    if not isinstance(event, dict) or not isinstance(event.get("mail"), dict):
        raise PayloadError("the SNS Message is not an SES event")
    kind = text(event.get("eventType") or event.get("notificationType"))
    message_id = text(event["mail"].get("messageId"))
    status, recipients = _KINDS.get(kind, (EventStatus.OTHER, _all))
    if kind == "Bounce" and (event.get("bounce") or {}).get("bounceType") == "Transient":
        status = EventStatus.DEFERRED  # a soft bounce: SES gave up, a later send may pass
    at = iso_time(event["mail"].get("timestamp"), now)
    for section in ("delivery", "bounce", "complaint", "deliveryDelay", "open", "click"):
        if isinstance(event.get(section), dict) and "timestamp" in event[section]:
            at = iso_time(event[section]["timestamp"], at)
    return [
        ProviderEvent(message_id, rcpt, status, at, detail, kind)
        for rcpt, detail in recipients(event)
        if rcpt and message_id
    ]
