"""The mailer <-> router <-> scheduler contract: one Outcome per recipient per attempt.

The soft/hard policy lives in one place per protocol (like Postfix's smtp_trouble.c):
a mailer says DELIVERED, DEFERRED or BOUNCED and whether another mailer could do better
(``failover``); the router and scheduler never look at protocol details.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from postroom.smtp.replies import Reply

__all__ = ["Disposition", "Outcome", "RemoteInfo", "Routed"]


class Disposition(StrEnum):
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"


@dataclass(frozen=True, slots=True)
class RemoteInfo:
    """Where an attempt went: for the log and for DSNs (Remote-MTA)."""

    mailer: str  # the configured mailer's name
    host: str | None = None  # remote host name (MX name, relay host, API host)
    ip: str | None = None
    port: int | None = None
    tls: str | None = None  # e.g. "TLSv1.3"
    provider_id: str | None = None  # a provider API's message id


@dataclass(frozen=True, slots=True)
class Routed:
    """The route an attempt was made on and why, as the router decided it then: kept with
    the attempt, since the routes may be configured otherwise by the time it is read."""

    route: str  # the route's name
    reason: str  # the conditions that matched, "default: ...", or "failover after ..."


@dataclass(frozen=True, slots=True)
class Outcome:
    recipient: str  # the recipient address as stored
    disposition: Disposition
    reply: Reply  # the remote's words, or ours ("4.4.1 Connection refused by ...")
    remote: RemoteInfo | None = None
    failover: bool = False  # another mailer in the chain could succeed
    duration: float = 0.0  # seconds this attempt took for this recipient
    # DEFERRED only: the wall time to try again at, when the mailer knows it (a provider's
    # 429 retry hint, the end of a sending-limit window); the scheduler's backoff otherwise.
    retry_at: float | None = None
    routed: Routed | None = None  # set by the router, not the mailer
