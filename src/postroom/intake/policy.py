"""Relay and sender rules as pure functions over facts the submission looked up.

No open relay: a recipient outside our local domains is accepted only from a principal
(an AUTH user, an API key, a local Unix user, a trusted network, postroom itself).
RFC 5321 4.5.1: postmaster at a local domain is always accepted. A local part that
cannot name a mailbox is refused at once (553 5.1.3), never accepted and bounced later.

Who may send as whom: every principal has ``SenderRights``, the domains it may use. They
bind the envelope sender (at MAIL FROM, ``553 5.7.1``) and every author field of the
header (``From``, ``Sender``, ``Resent-From``, ``Resent-Sender``; at end of data, a
``SenderRefusal`` naming the field), a null sender included. An author field that cannot
be read is refused too: another reader may see a domain in it that we did not.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum

from postroom.mail.address import Address, mailbox_problem
from postroom.mail.authors import Authors
from postroom.smtp import replies
from postroom.smtp.replies import Reply
from postroom.store.models import Suppression

__all__ = [
    "ANY_SENDER",
    "FieldRefusal",
    "Principal",
    "PrincipalKind",
    "SenderRefusal",
    "SenderRights",
    "author_domains",
    "author_verdict",
    "recipient_verdict",
    "request_field_refusal",
    "sender_verdict",
    "suppressed_reply",
]


class PrincipalKind(StrEnum):
    USER = "user"  # SMTP AUTH
    API_KEY = "api-key"
    LOCAL = "local"  # a Unix user: postroom-sendmail, `postroom send`
    NETWORK = "network"  # a client address in relay_networks
    POSTROOM = "postroom"  # postroom's own mail (DSNs)


@dataclass(frozen=True, slots=True)
class SenderRights:
    """The domains a principal may use as envelope sender and in author fields."""

    domains: frozenset[str] = frozenset()  # A-labels, lower case
    local_domains: bool = False  # and the store's local domains when the mail is sent
    any_domain: bool = False

    def allows(self, domain: str, local: Collection[str] = ()) -> bool:
        """``local``: which domains in question are local (looked up by the caller)."""
        return (
            self.any_domain
            or domain in self.domains
            or (self.local_domains and domain in local)
        )  # fmt: skip

    def needs_lookup(self, domain: str) -> bool:
        """Whether ``allows`` depends on ``domain`` being local."""
        return self.local_domains and not self.any_domain and domain not in self.domains

    def describe(self) -> str:
        """For `user list`, `apikey list` and the log: "any domain", or what is allowed."""
        if self.any_domain:
            return "any domain"
        parts = (["local domains"] if self.local_domains else []) + sorted(self.domains)
        return ", ".join(parts) or "no domain"


ANY_SENDER = SenderRights(any_domain=True)  # postroom itself, a local user, a trusted key


@dataclass(frozen=True, slots=True)
class Principal:
    """Who submits a message, and which sender domains it may use."""

    name: str  # the user's address, the key's name, the Unix user, the network
    rights: SenderRights
    kind: PrincipalKind = PrincipalKind.USER


@dataclass(frozen=True, slots=True)
class FieldRefusal(Reply):
    """A refusal that names the field at fault, so a door can say which (the API's
    answer names it in ``fields``): a request field postroom cannot read
    (``X-Postroom-Tag``, ``X-Postroom-Track`` ...)."""

    field: str = ""


@dataclass(frozen=True, slots=True)
class SenderRefusal(FieldRefusal):
    """``553 5.7.1`` for an author field the principal may not use, naming the field
    ("From", "Sender", ...) so a door can say which (the API's 403 names it)."""

    field: str = "From"


def request_field_refusal(field: str, problem: str) -> FieldRefusal:
    """``550 5.6.0`` for a postroom request field that cannot be used as written."""
    return FieldRefusal(550, "5.6.0", f"{field}: {problem}", field)


def sender_verdict(
    principal: Principal | None, sender: Address | None, local: Collection[str] = ()
) -> Reply | None:
    """None when the envelope sender is allowed, else the reply to refuse it with."""
    if principal is None or sender is None:
        return None
    if principal.rights.allows(sender.ascii_domain, local):
        return None
    return replies.SENDER_NOT_ALLOWED


def author_domains(authors: Authors) -> Iterable[str]:
    return (a.domain for a in authors.addresses if a.domain is not None)


def author_verdict(
    principal: Principal | None, authors: Authors, local: Collection[str] = ()
) -> SenderRefusal | None:
    """None when every author field is one the principal may use; else the refusal
    naming the first field (in header order) that it may not use or that is unreadable."""
    if principal is None or principal.rights.any_domain:
        return None
    if authors.unreadable:
        name = authors.unreadable[0]
        return _refusal(name, f"{name} header cannot be read; it is refused from this sender")
    for author in authors.addresses:
        if author.domain is not None and not principal.rights.allows(author.domain, local):
            return _refusal(author.field, f"{author.field}: not allowed to send as {author.domain}")
    return None


def _refusal(field: str, text: str) -> SenderRefusal:
    base = replies.SENDER_NOT_ALLOWED
    return SenderRefusal(base.code, base.enhanced, text, field)


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


def suppressed_reply(address: str, entry: Suppression) -> str:
    """The reply a recipient on the suppression list is recorded with (never sent to a
    client: the message is accepted, that recipient is rejected without an attempt)."""
    return f"550 5.7.1 <{address}>: recipient is on the suppression list ({entry.reason.value})"
