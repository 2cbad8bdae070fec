"""Tracking per route: which of ``[[routes]]``' ``track`` keys apply to a message, asked by
intake at commit (``intake.marks.RouteFacts``), before DKIM signs.

Routes are otherwise taken at delivery, long after the message was signed; rewriting
links then would break the signature or mean signing at every attempt. So intake asks
the same route table, with the same conditions, over the message it is about to store:
the route a recipient will take is the first configured one that matches now (the
built-in default routes never track). Intake decides what to do when the recipients'
routes disagree (``Marks.tracking``).
"""

from __future__ import annotations

from postroom.config.settings import Settings
from postroom.delivery.message import OutboundMessage
from postroom.delivery.router import RouteTable
from postroom.delivery.rules import MessageView
from postroom.intake.marks import RouteFacts, RouteTracking
from postroom.mail.tracking import Tracking

__all__ = ["route_tracking"]


def route_tracking(settings: Settings) -> RouteTracking | None:
    """The tracking each recipient's route asks for (None: the route says nothing), or
    None when no route has a ``track`` key, so intake need not ask."""
    # The local domains only choose between the default routes, which never track.
    table = RouteTable.from_settings(settings, ())
    if all(route.track is None for route in table.routes):
        return None

    def tracking(facts: RouteFacts) -> tuple[Tracking | None, ...]:
        message = OutboundMessage(
            id=facts.queue_id,
            sender=facts.sender,
            data=facts.data,
            principal=facts.principal,
            source_kind=facts.source_kind,
        )
        found: list[Tracking | None] = []
        view: MessageView | None = None
        for recipient in facts.recipients:
            view = (
                MessageView(message, recipient) if view is None else view.for_recipient(recipient)
            )
            route = table.configured_for(view)
            found.append(None if route is None else route.track)
        return tuple(found)

    return tracking
