"""What a provider's callback says about one recipient of one sent message.

``ProviderEvent`` is the neutral form every provider's payload is mapped into; the
helpers below are the few things every parser needs (JSON, times, headers).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "EventStatus",
    "PayloadError",
    "ProviderEvent",
    "header",
    "iso_time",
    "load_json",
    "number",
    "text",
]


class EventStatus(StrEnum):
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    DEFERRED = "deferred"
    COMPLAINED = "complained"
    OPENED = "opened"
    CLICKED = "clicked"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    provider_message_id: str  # as the provider's send answer gave it (RemoteInfo.provider_id)
    recipient: str
    status: EventStatus
    at: float  # seconds since the epoch, as the provider dated the event
    detail: str = ""  # the provider's words (bounce diagnostic, reason)
    kind: str = ""  # the provider's own event name, e.g. "hard_bounce"


class PayloadError(ValueError):
    """The body is not what the provider sends: the hook answers 400."""


def load_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"the body is not JSON: {exc}") from None


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value whatever the case of its name in ``headers``."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def iso_time(value: object, default: float) -> float:
    """An ISO 8601 time (``Z`` or an offset; naive means UTC) as epoch seconds."""
    if not isinstance(value, str):
        return default
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return default
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def number(value: object, default: float) -> float:
    """A Unix time sent as a number or a numeric string."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return default
    return default


def text(value: object) -> str:
    """A JSON value as one line of text ('' for null); ids may come as numbers."""
    if value is None:
        return ""
    return " ".join(str(value).split())
