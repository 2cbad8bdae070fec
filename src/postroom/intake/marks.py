"""What intake writes into a submitted message so that what readers do comes back to
postroom: tracking (a pixel and rewritten links in its HTML parts) and List-Unsubscribe
with RFC 8058 one-click. Asked per message (``X-Postroom-Track``,
``X-Postroom-Unsubscribe``: the clean-up removes both and hands their values here, the
API's ``track`` and ``unsubscribe`` fields become them), per route (``[[routes]]``'
``track``, found by ``delivery.tracking`` and handed in as a ``RouteTracking``) or for
all mail by ``[tracking]``, in that order. Done before DKIM signing, so the signature
covers what is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from postroom.config.feedback import TrackingSettings
from postroom.config.settings import Settings
from postroom.feedback.links import Links
from postroom.intake.policy import request_field_refusal
from postroom.mail.tracking import Tracking, parse_track, track_message
from postroom.smtp.replies import Reply

__all__ = ["Asked", "Marks", "RouteFacts", "RouteTracking", "marks_for"]

_YES = {"yes": True, "on": True, "true": True, "no": False, "off": False, "false": False}


@dataclass(frozen=True, slots=True)
class Asked:
    tracking: Tracking | None  # None: the message did not say
    unsubscribe: bool


@dataclass(frozen=True, slots=True)
class RouteFacts:
    """What route conditions look at, of a message intake is about to store."""

    queue_id: str
    sender: str  # "" for <>
    principal: str | None  # the Source's principal (AUTH user, API key, Unix user)
    source_kind: str
    recipients: tuple[str, ...]
    data: bytes  # the cleaned message


# Each recipient's route's tracking, in order (None: its route says nothing).
RouteTracking = Callable[[RouteFacts], Sequence[Tracking | None]]


def _bad_field(name: str) -> Reply:
    return request_field_refusal(name, "not one of the documented values")


@dataclass(frozen=True, slots=True)
class Marks:
    links: Links
    settings: TrackingSettings

    def asked(self, requests: Sequence[tuple[str, str]]) -> Asked | Reply:
        """What the message asks for (its last field of each name wins; List-Unsubscribe
        else the default); a value we cannot read refuses the message rather than guess."""
        tracking: Tracking | None = None
        unsubscribe = self.settings.unsubscribe
        for name, value in requests:
            if name == "x-postroom-track":
                parsed = parse_track(value)
                if parsed is None:
                    return _bad_field("X-Postroom-Track")
                tracking = parsed
            elif name == "x-postroom-unsubscribe":
                said = _YES.get(value.strip().lower())
                if said is None:
                    return _bad_field("X-Postroom-Unsubscribe")
                unsubscribe = said
        return Asked(tracking, unsubscribe)

    def tracking(self, asked: Asked, routed: Sequence[Tracking | None]) -> Tracking:
        """The tracking a message gets: its own request, else its recipients' routes',
        each route that says nothing counting as ``[tracking] default``. Routes that
        disagree are met where they agree (opens only when every recipient's route
        tracks opens): one body goes to all, and no one is tracked whom their route
        would not track."""
        if asked.tracking is not None:
            return asked.tracking
        default = parse_track(self.settings.default) or Tracking()
        wanted = [default if track is None else track for track in routed] or [default]
        return Tracking(all(t.opens for t in wanted), all(t.clicks for t in wanted))

    def unsubscribe_fields(
        self, asked: Asked, queue_id: str, recipients: Sequence[str], sender_domain: str
    ) -> bytes:
        """``List-Unsubscribe`` and ``List-Unsubscribe-Post`` (RFC 8058 3.1) for a
        message to one recipient: the URL names who unsubscribes, so a message to several
        people cannot carry one."""
        if not asked.unsubscribe or len(recipients) != 1:
            return b""
        url = self.links.unsubscribe(queue_id, recipients[0], sender_domain)
        return (
            f"List-Unsubscribe: <{url}>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        ).encode()

    def track(
        self, tracking: Tracking, queue_id: str, recipients: Sequence[str], data: bytes
    ) -> bytes | None:
        """The message with its HTML parts tracked, or None when it has none."""
        recipient = recipients[0] if len(recipients) == 1 else ""
        links = self.links
        return track_message(
            data,
            pixel=links.pixel(queue_id, recipient) if tracking.opens else None,
            link=(lambda url: links.click(queue_id, recipient, url)) if tracking.clicks else None,
        )


def marks_for(settings: Settings, links: Links) -> Marks:
    return Marks(links, settings.tracking)
