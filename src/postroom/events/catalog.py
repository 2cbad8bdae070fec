"""Event dataclasses with stable kind names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = ["DeliveryAttempt", "Event", "MessageQueued", "SmtpTransaction"]


@dataclass(frozen=True, slots=True)
class SmtpTransaction:
    """One SMTP transaction ended: accepted (queued), refused (at MAIL or at end of data),
    or aborted before its end of data (RSET, QUIT, STARTTLS, the connection lost)."""

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
    reply: str | None  # the transaction's last reply; None when it was aborted (RSET, QUIT, ...)
    relay_network: str | None = None  # the relay_networks entry the client relayed by
    refused: tuple[tuple[str, str], ...] = ()  # (recipient, reply) for each RCPT refused


@dataclass(frozen=True, slots=True)
class MessageQueued:
    """A message is durable in the queue (after the commit's fsync)."""

    kind: ClassVar[str] = "message.queued"
    queue_id: str
    source: str
    sender: str
    recipients: tuple[str, ...]
    size: int
    # Every recipient is being delivered by the process that accepted it (local mail
    # handed off at commit): nothing is due for the scheduler, so it need not look.
    handed_off: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """One mailer tried one recipient (recorded in the store before this is published)."""

    kind: ClassVar[str] = "delivery.attempt"
    queue_id: str
    recipient: str
    mailer: str
    disposition: str  # delivered | deferred | bounced
    status: str  # the recipient's state after the attempt: delivered | deferred | bounced | expired
    reply: str
    host: str | None
    ip: str | None
    tls: str | None
    duration: float
    dkim: str = "none"  # the message's signatures, "rsa-sha256 s=... d=...", or "none"


Event = SmtpTransaction | MessageQueued | DeliveryAttempt
