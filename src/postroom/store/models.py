"""Rows the store takes and gives back."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from postroom.mail.envelope import Envelope, Source
from postroom.mail.spool import SpooledBody

__all__ = ["NewMessage", "RecipientState", "RecipientStatus", "StoredMessage", "UserRecord"]


class RecipientStatus(StrEnum):
    QUEUED = "queued"  # waiting for its first attempt
    DEFERRED = "deferred"  # an attempt failed temporarily; next_attempt_at says when again
    DELIVERED = "delivered"
    BOUNCED = "bounced"


@dataclass(frozen=True, slots=True)
class NewMessage:
    """What intake hands the store: the stored bytes are ``header`` then ``body``."""

    id: str
    envelope: Envelope
    source: Source
    received_at: float
    header: bytes  # prepended trace headers (Received:), CRLF-terminated
    body: SpooledBody

    @property
    def size(self) -> int:
        return len(self.header) + self.body.size


@dataclass(frozen=True, slots=True)
class RecipientState:
    address: str
    status: RecipientStatus
    notify: str | None  # comma-separated NOTIFY values, None when not given
    orcpt: str | None
    attempts: int
    next_attempt_at: float | None
    last_reply: str | None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: str
    sender: str  # "" for the null reverse-path
    recipients: tuple[RecipientState, ...]
    ret: str | None
    envid: str | None
    body_type: str
    smtputf8: bool
    size: int
    received_at: float
    source_kind: str
    principal: str | None
    client_ip: str | None
    helo: str | None
    protocol: str | None
    tls: str | None
    held: bool
    client_port: int | None = None
    reverse_dns: str | None = None
    listener: str | None = None


@dataclass(frozen=True, slots=True)
class UserRecord:
    address: str  # the lookup key: Address.key
    password_hash: str
    sender_domains: tuple[str, ...]  # empty: may send as any domain
    created_at: float
