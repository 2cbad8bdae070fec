"""A delivery attempt as the bus carries it: a bounce unless told otherwise."""

from __future__ import annotations

import dataclasses
from typing import Any

from postroom.events import DeliveryAttempt

BOUNCE = DeliveryAttempt(
    queue_id="Q1",
    recipient="gone@one.test",
    mailer="relay",
    disposition="bounced",
    status="bounced",
    reply="550 5.1.1 No such user",
    host="relay.test",
    ip="127.0.0.1",
    tls=None,
    duration=0.01,
    dkim="none",
)


def attempt(**changes: Any) -> DeliveryAttempt:
    return dataclasses.replace(BOUNCE, **changes)
