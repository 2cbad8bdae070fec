"""Relay and sender rules as pure functions over facts the submission looked up.

No open relay: a recipient outside our local domains is accepted only from an
authenticated principal. A principal limited to sender domains may only use
those in MAIL FROM. RFC 5321 4.5.1: postmaster at a local domain is always accepted.
A local part that cannot name a mailbox is refused at once (553 5.1.3), never
accepted and bounced later.
"""

from __future__ import annotations

from dataclasses import dataclass

from postroom.mail.address import Address, mailbox_problem
from postroom.smtp import replies
from postroom.smtp.replies import Reply

__all__ = ["Principal", "recipient_verdict", "sender_verdict"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who submitted: an AUTH user (later also an API key)."""

    name: str
    sender_domains: tuple[str, ...] = ()  # empty: any sender domain

    def may_send_as(self, domain: str) -> bool:
        return not self.sender_domains or domain in self.sender_domains


def sender_verdict(principal: Principal | None, sender: Address | None) -> Reply | None:
    """None when the sender is allowed, else the reply to refuse it with."""
    if principal is None or sender is None:
        return None
    if principal.may_send_as(sender.ascii_domain):
        return None
    return replies.SENDER_NOT_ALLOWED


def recipient_verdict(
    recipient: Address,
    *,
    principal: Principal | None,
    local_domain: bool,
    user_exists: bool,
) -> Reply | None:
    """None when the recipient is accepted, else the reply to refuse it with."""
    if local_domain:
        if mailbox_problem(recipient) is not None:
            return replies.MAILBOX_NAME_NOT_ALLOWED
        if user_exists or recipient.local.lower() == "postmaster":
            return None
        return replies.NO_SUCH_USER
    if principal is None:
        return replies.RELAY_DENIED
    return None
