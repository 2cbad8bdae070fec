"""What an attempt's outcomes tell the outside: catalogue events and hard bounces.

Pure functions of the settled recipients: the scheduler records the events with the
outcomes (one transaction, ``record_outcomes``) and adds the hard bounces to the
suppression list after.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from postroom.config.mailers import MailerSettings
from postroom.delivery.outcome import Outcome
from postroom.mail.events import EventOrigin, EventType, MailEvent, new_event_id
from postroom.mail.returned import HARD_BOUNCE_CLASS
from postroom.store.models import (
    GLOBAL_SCOPE,
    RecipientStatus,
    Suppression,
    SuppressionReason,
)

__all__ = ["is_hard_bounce", "outcome_event", "relay_names", "suppression_of"]

# Mailer types that deliver themselves (to the recipient's MX, into a mailbox); every other
# type hands the message on to a relay or a provider, and its success is "sent".
_DELIVERING_TYPES = frozenset({"mx", "local"})


def relay_names(mailers: Iterable[MailerSettings]) -> frozenset[str]:
    """The configured mailers whose success is ``sent``, not ``delivered``."""
    return frozenset(m.name for m in mailers if m.type not in _DELIVERING_TYPES)


_TYPES = {
    RecipientStatus.DELIVERED: EventType.DELIVERED,
    RecipientStatus.DEFERRED: EventType.DEFERRED,
    RecipientStatus.BOUNCED: EventType.BOUNCED,
    RecipientStatus.EXPIRED: EventType.EXPIRED,
}


def outcome_event(
    message_id: str,
    status: RecipientStatus,
    outcome: Outcome,
    at: float,
    relays: Collection[str],
) -> MailEvent:
    """The event of one recipient's settled outcome. A delivery through a mailer in
    ``relays`` (a smarthost, a provider) is ``sent``: another server delivers it on."""
    remote = outcome.remote
    mailer = remote.mailer if remote is not None else None
    kind = _TYPES.get(status, EventType.FAILED)
    if kind is EventType.DELIVERED and mailer in relays:
        kind = EventType.SENT
    details: list[tuple[str, str]] = []
    if remote is not None:
        details.extend(
            (key, value)
            for key, value in (
                ("host", remote.host),
                ("ip", remote.ip),
                ("provider_id", remote.provider_id),
            )
            if value
        )
    if outcome.routed is not None:  # the route taken, and why (as the attempt's row says)
        details.append(("route", outcome.routed.route))
        details.append(("route_reason", outcome.routed.reason))
    return MailEvent(
        id=new_event_id(),
        type=kind,
        at=at,
        recipient=outcome.recipient,
        queue_id=message_id,
        mailer=mailer or None,
        reply=str(outcome.reply),
        origin=EventOrigin.DELIVERY,
        details=tuple(details),
    )


def is_hard_bounce(status: RecipientStatus, outcome: Outcome) -> bool:
    enhanced = outcome.reply.enhanced or ""
    return status is RecipientStatus.BOUNCED and enhanced.startswith(HARD_BOUNCE_CLASS)


def suppression_of(message_id: str, outcome: Outcome, at: float) -> Suppression:
    """A hard bounce's entry: global, since the address does not exist for anyone."""
    return Suppression(
        address=outcome.recipient.lower(),
        scope=GLOBAL_SCOPE,
        reason=SuppressionReason.HARD_BOUNCE,
        source=f"delivery {message_id}",
        created_at=at,
        detail=str(outcome.reply),
    )
