"""What comes back from mail postroom sent: returned bounces (consumed at the mx
listener, linked, suppressing hard-bounced addresses), opens, clicks and unsubscribes
(the ``/t/...`` URLs), each recorded as an event in the outbox.

Inputs: whole returned messages from intake, tokens from the API. Outputs: events
(``EventStore.record_events``) and suppression entries. Nothing here sends anything.
"""

from postroom.feedback.engagement import EngagementDesk, EngagementStore
from postroom.feedback.links import Link, LinkKind, Links, links_for
from postroom.feedback.returns import CONSUMED, ReturnDesk, ReturnStore

__all__ = [
    "CONSUMED",
    "EngagementDesk",
    "EngagementStore",
    "Link",
    "LinkKind",
    "Links",
    "ReturnDesk",
    "ReturnStore",
    "links_for",
]
