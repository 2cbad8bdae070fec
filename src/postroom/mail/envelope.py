"""The envelope of a message: sender, recipients, DSN request (RFC 3461), source."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from postroom.mail.address import Address

__all__ = ["DsnRequest", "Envelope", "Notify", "Recipient", "Ret", "Source", "SourceKind"]


class Ret(StrEnum):
    """RFC 3461 4.3: what a failure DSN returns of the message."""

    FULL = "FULL"
    HDRS = "HDRS"


class Notify(StrEnum):
    """RFC 3461 4.1: when a DSN is wanted for a recipient."""

    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    DELAY = "DELAY"
    NEVER = "NEVER"


@dataclass(frozen=True, slots=True)
class DsnRequest:
    """The message-wide DSN parameters given with MAIL FROM."""

    ret: Ret | None = None
    envid: str | None = None  # xtext-decoded


@dataclass(frozen=True, slots=True)
class Recipient:
    address: Address
    notify: frozenset[Notify] | None = None  # None: not given (the default applies)
    orcpt: str | None = None  # "addr-type;address", xtext-decoded


class SourceKind(StrEnum):
    SMTP = "smtp"
    API = "api"
    SENDMAIL = "sendmail"
    DSN = "dsn"


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from: the facts for Received:, routing and the log."""

    kind: SourceKind
    principal: str | None = None  # the AUTH user or API key name
    client_ip: str | None = None
    client_port: int | None = None
    helo: str | None = None
    reverse_dns: str | None = None
    protocol: str | None = None  # RFC 3848 with-protocol: SMTP, ESMTP, ESMTPS, ESMTPSA, ...
    tls: str | None = None  # e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384"
    listener: str | None = None  # listener role
    dsn_of: str | None = None  # a DSN postroom made: the queue id of the message it reports on


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: Address | None  # None is the null reverse-path <>
    recipients: tuple[Recipient, ...]
    dsn: DsnRequest = field(default_factory=DsnRequest)
    body: str = "7BIT"  # BODY= parameter: 7BIT or 8BITMIME
    smtputf8: bool = False
