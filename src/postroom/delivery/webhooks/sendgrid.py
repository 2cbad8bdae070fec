"""SendGrid's signed Event Webhook.

SendGrid signs ``timestamp + raw body`` with ECDSA P-256 and SHA-256; the base64 DER
signature and the timestamp come in ``X-Twilio-Email-Event-Webhook-Signature`` and
``-Timestamp``. The body is a JSON array of events; ``sg_message_id`` starts with the
``X-Message-Id`` of the send answer, followed by ``.filter...``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from postroom.delivery.webhooks.events import (
    EventStatus,
    PayloadError,
    ProviderEvent,
    header,
    load_json,
    number,
    text,
)

# cryptography (about 7 MiB mapped at its import) when a key is loaded or a signature
# checked: the API imports this module whether or not a SendGrid mailer is configured.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["SIGNATURE", "STATUSES", "TIMESTAMP", "load_public_key", "parse", "verify"]

SIGNATURE: Final = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP: Final = "X-Twilio-Email-Event-Webhook-Timestamp"

STATUSES: Final[Mapping[str, EventStatus]] = MappingProxyType(
    {
        "delivered": EventStatus.DELIVERED,
        "bounce": EventStatus.BOUNCED,  # type "bounce" or "blocked": both final
        "dropped": EventStatus.BOUNCED,  # suppressed or invalid: never sent
        "deferred": EventStatus.DEFERRED,
        "spamreport": EventStatus.COMPLAINED,
        "open": EventStatus.OPENED,
        "click": EventStatus.CLICKED,
    }
)


def load_public_key(value: str) -> ec.EllipticCurvePublicKey:
    """The key as SendGrid's console shows it (base64 DER), or PEM; ValueError if neither."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    data = value.strip().encode()
    try:
        if data.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_der_public_key(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not an EC public key in base64 DER or PEM: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an EC public key")
    return key


def verify(
    headers: Mapping[str, str],
    body: bytes,
    key: ec.EllipticCurvePublicKey,
    *,
    now: float,
    tolerance: float,
) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    signature, timestamp = header(headers, SIGNATURE), header(headers, TIMESTAMP)
    if not signature or not timestamp:
        return False
    if abs(now - number(timestamp, float("inf"))) > tolerance:
        return False  # stale: a replay of an old delivery
    try:
        der = base64.b64decode(signature, validate=True)
        key.verify(der, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, InvalidSignature, ValueError):
        return False
    return True


def parse(body: bytes, *, now: float) -> list[ProviderEvent]:
    data = load_json(body)
    if not isinstance(data, list):
        raise PayloadError("SendGrid posts a JSON array of events")
    events = []
    for item in data:
        if not isinstance(item, dict):
            raise PayloadError("each SendGrid event is a JSON object")
        message_id = text(item.get("sg_message_id")).split(".", 1)[0]
        kind = text(item.get("event"))
        if not message_id or not item.get("email"):
            continue  # e.g. group_resubscribe: not about a message we sent
        detail = text(item.get("reason") or item.get("response") or item.get("type"))
        events.append(
            ProviderEvent(
                provider_message_id=message_id,
                recipient=text(item["email"]),
                status=STATUSES.get(kind, EventStatus.OTHER),
                at=number(item.get("timestamp"), now),
                detail=detail,
                kind=kind,
            )
        )
    return events
