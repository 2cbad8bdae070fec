"""Mailers: one small contract, many transports (MX, relay, local, provider APIs).

A mailer gets one message and the recipients it should deliver to (all in one
destination when it matters, e.g. one domain for ``mx``) and returns exactly one
``Outcome`` per recipient. It never raises for delivery failures: those are outcomes.

By kind: ``mta`` (postroom delivering itself: MX hosts, a relay, local Maildirs, with
the outbound SMTP client they share), ``api`` (provider HTTP APIs and their shared
request, MIME-part and recipient-splitting helpers) and ``oauth`` (the token flow and
storage for API mailers that send as a user). ``build`` maps a configured ``type`` to
its class.
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
