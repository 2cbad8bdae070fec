"""Mailers: one small contract, many transports (MX, relay, local, provider APIs).

A mailer gets one message and the recipients it should deliver to (all in one
destination when it matters, e.g. one domain for ``mx``) and returns exactly one
``Outcome`` per recipient. It never raises for delivery failures: those are outcomes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Outcome

__all__ = ["Mailer"]


class Mailer(Protocol):
    name: str

    async def deliver(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> list[Outcome]: ...

    async def aclose(self) -> None: ...
