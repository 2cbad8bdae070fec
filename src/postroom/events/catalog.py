"""Event dataclasses with stable kind names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = ["Event", "SmtpTransaction"]


@dataclass(frozen=True, slots=True)
class SmtpTransaction:
    """One SMTP transaction ended: accepted (queued), refused at end of data, or aborted."""

    kind: ClassVar[str] = "smtp.transaction"
    queue_id: str | None
    client_ip: str | None
    listener: str
    auth_user: str | None
    sender: str
    recipients: tuple[str, ...]
    size: int
    tls: str | None
    result: str  # "queued", "rejected" or "aborted"
    reply: str


Event = SmtpTransaction
