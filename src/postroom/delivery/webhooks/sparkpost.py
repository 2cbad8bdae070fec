"""SparkPost's webhooks: a JSON array of ``{"msys": {"<class>_event": {...}}}``.

Events name the transmission (``transmission_id``, the ``results.id`` of the send
answer) and the recipient (``rcpt_to``). A test ping posts ``[{"msys": {}}]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

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
        "delivery": EventStatus.DELIVERED,
        "bounce": EventStatus.BOUNCED,
        "out_of_band": EventStatus.BOUNCED,
        "policy_rejection": EventStatus.BOUNCED,
        "generation_rejection": EventStatus.BOUNCED,
        "generation_failure": EventStatus.BOUNCED,
        "delay": EventStatus.DEFERRED,
        "spam_complaint": EventStatus.COMPLAINED,
        "open": EventStatus.OPENED,
        "initial_open": EventStatus.OPENED,
        "amp_open": EventStatus.OPENED,
        "click": EventStatus.CLICKED,
        "amp_click": EventStatus.CLICKED,
    }
)


def parse(body: bytes, *, now: float) -> list[ProviderEvent]:
    data = load_json(body)
    if not isinstance(data, list):
        raise PayloadError("SparkPost posts a JSON array of events")
    events = []
    for item in data:
        msys = item.get("msys") if isinstance(item, dict) else None
        if not isinstance(msys, dict):
            raise PayloadError("each SparkPost event is an object with 'msys'")
        for event in msys.values():
            if not isinstance(event, dict):
                continue
            message_id, recipient = text(event.get("transmission_id")), text(event.get("rcpt_to"))
            if not message_id or not recipient:
                continue
            kind = text(event.get("type"))
            events.append(
                ProviderEvent(
                    provider_message_id=message_id,
                    recipient=recipient,
                    status=STATUSES.get(kind, EventStatus.OTHER),
                    at=number(event.get("timestamp"), now),
                    detail=text(event.get("raw_reason") or event.get("reason")),
                    kind=kind,
                )
            )
    return events
