"""Resend's webhooks, signed by Svix.

Svix signs ``svix-id + "." + svix-timestamp + "." + raw body`` with HMAC-SHA256; the
key is the base64 part of the ``whsec_...`` secret. ``svix-signature`` holds one or more
space-separated ``v1,<base64>`` entries (several while a secret is being rotated). A
timestamp further than the tolerance from our clock is refused, as Svix's own libraries do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from postroom.delivery.webhooks.events import (
    EventStatus,
    PayloadError,
    ProviderEvent,
    header,
    iso_time,
    load_json,
    number,
    text,
)

__all__ = ["STATUSES", "decode_secret", "parse", "verify"]

STATUSES: Final[Mapping[str, EventStatus]] = MappingProxyType(
    {
        "email.delivered": EventStatus.DELIVERED,
        "email.bounced": EventStatus.BOUNCED,
        "email.failed": EventStatus.BOUNCED,
        "email.suppressed": EventStatus.BOUNCED,
        "email.delivery_delayed": EventStatus.DEFERRED,
        "email.complained": EventStatus.COMPLAINED,
        "email.opened": EventStatus.OPENED,
        "email.clicked": EventStatus.CLICKED,
    }
)


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; ValueError when it is not one."""
    encoded = secret.strip().removeprefix("whsec_")
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError("not a Svix secret (whsec_ followed by base64)") from None


def verify(
    headers: Mapping[str, str], body: bytes, key: bytes, *, now: float, tolerance: float
) -> bool:
    msg_id, timestamp = header(headers, "svix-id"), header(headers, "svix-timestamp")
    signatures = header(headers, "svix-signature")
    if not (msg_id and timestamp and signatures):
        return False
    if abs(now - number(timestamp, float("inf"))) > tolerance:
        return False
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(expected, value):
            return True
    return False


def parse(body: bytes, *, now: float) -> list[ProviderEvent]:
    data = load_json(body)
    if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
        raise PayloadError("a Resend webhook is a JSON object with a 'data' object")
    kind, email = text(data.get("type")), data["data"]
    message_id = text(email.get("email_id"))
    recipients = email.get("to")
    if isinstance(recipients, str):
        recipients = [recipients]
    if not message_id or not isinstance(recipients, list):
        return []  # domain.* and contact.* events
    bounce = email.get("bounce")
    detail = text(bounce.get("message")) if isinstance(bounce, dict) else ""
    at = iso_time(data.get("created_at"), now)
    status = STATUSES.get(kind, EventStatus.OTHER)
    return [
        ProviderEvent(message_id, text(rcpt), status, at, detail, kind)
        for rcpt in recipients
        if text(rcpt)
    ]
