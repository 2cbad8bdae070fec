"""HTTP Basic credentials on the hook URL: all that Postmark, Brevo, Mailjet, SparkPost
and SendLayer offer to prove a callback is theirs. Compared in constant time."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping

from postroom.delivery.webhooks.events import header

__all__ = ["verify"]


def verify(headers: Mapping[str, str], username: str, password: str) -> bool:
    scheme, _, encoded = (header(headers, "Authorization") or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        return False
    user, sep, secret = given.partition(b":")
    # Both compared, always, so the time taken says nothing about which was wrong.
    user_ok = hmac.compare_digest(user, username.encode())
    password_ok = hmac.compare_digest(secret, password.encode())
    return bool(sep) and user_ok and password_ok
