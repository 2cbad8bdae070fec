"""What a mailer is handed: the queued message's bytes and envelope facts."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OutboundMessage", "OutboundRecipient"]


@dataclass(frozen=True, slots=True)
class OutboundRecipient:
    address: str
    notify: str | None = None  # RFC 3461 NOTIFY as given (comma-separated), passed on
    orcpt: str | None = None  # RFC 3461 ORCPT ("rfc822;addr"), passed on


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    id: str
    sender: str  # "" is the null reverse-path
    data: bytes  # the stored message: trace headers and body, CRLF line endings
    smtputf8: bool = False
    body_type: str = "7BIT"  # 7BIT or 8BITMIME
    ret: str | None = None
    envid: str | None = None
    principal: str | None = None  # the AUTH user or API key that submitted it
    source_kind: str = "smtp"
    received_at: float = 0.0
