"""How an outgoing webhook request is signed, and how a receiver checks it.

``X-Postroom-Signature: v1=<hex>`` is HMAC-SHA256, keyed with the webhook's secret,
over ``<timestamp>.<body>``: the ``X-Postroom-Timestamp`` header's decimal Unix time, a
full stop, and the request body's bytes exactly as sent. Signing the time lets a
receiver refuse a replay: a request older than a few minutes is not ours to act on.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

__all__ = [
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "signature",
    "signed_headers",
    "verify",
]

SIGNATURE_HEADER = "X-Postroom-Signature"
TIMESTAMP_HEADER = "X-Postroom-Timestamp"
EVENT_HEADER = "X-Postroom-Event-Id"
_VERSION = "v1"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{_VERSION}={mac.hexdigest()}"


def signed_headers(secret: str, now: float, body: bytes, event_id: str) -> dict[str, str]:
    timestamp = int(now)
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        EVENT_HEADER: event_id,
    }


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: float, tolerance: float = 300
) -> bool:
    """What a receiver does: the signature matches and the time is within ``tolerance``
    seconds of ``now``. ``headers`` with lower-case names (as most servers give them) or
    as sent."""
    lowered = {k.lower(): v for k, v in headers.items()}
    stamp = lowered.get(TIMESTAMP_HEADER.lower(), "")
    given = lowered.get(SIGNATURE_HEADER.lower(), "")
    if not stamp.isdigit() or abs(now - int(stamp)) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, int(stamp), body), given)
