"""The ``capture`` mailer: keeps each message instead of sending it (development).

Route everything to it and nothing leaves the machine: each recipient is recorded as
delivered with ``250 2.0.0 Captured``, and the message stays in the store, where the
dashboard's Captured page and the API (``GET /api/v1/messages?mailer=NAME``) show it
whole (HTML in a sandbox, text, headers, attachments, raw), as Mailpit does. The same
server runs in production with the route changed; retention removes captured mail as
any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from postroom.config.mailers import CaptureMailerSettings
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Disposition, Outcome, RemoteInfo
from postroom.smtp.replies import Reply

__all__ = ["CAPTURED", "CaptureMailer"]

CAPTURED: Final = Reply(250, "2.0.0", "Captured: kept, not sent")


class CaptureMailer:
    """Implements ``Mailer``."""

    def __init__(self, settings: CaptureMailerSettings) -> None:
        self.name = settings.name

    async def deliver(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> list[Outcome]:
        remote = RemoteInfo(mailer=self.name, provider_id=message.id)
        return [
            Outcome(
                recipient=r.address,
                disposition=Disposition.DELIVERED,
                reply=CAPTURED,
                remote=remote,
            )
            for r in recipients
        ]

    async def aclose(self) -> None:
        return None
