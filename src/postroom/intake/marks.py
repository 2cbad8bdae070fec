"""What intake writes into a submitted message so that what readers do comes back to
postroom: tracking (a pixel and rewritten links in its HTML parts) and List-Unsubscribe
with RFC 8058 one-click. Asked per message (``X-Postroom-Track``,
``X-Postroom-Unsubscribe``: the clean-up removes both and hands their values here, the
API's ``track`` and ``unsubscribe`` fields become them) or for all mail by
``[tracking]``. Done before DKIM signing, so the signature covers what is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from postroom.config.feedback import TrackingSettings
from postroom.config.settings import Settings
from postroom.feedback.links import Links
from postroom.intake.policy import request_field_refusal
from postroom.mail.tracking import Tracking, parse_track, track_message
from postroom.smtp.replies import Reply

__all__ = ["Asked", "Marks", "marks_for"]

_YES = {"yes": True, "on": True, "true": True, "no": False, "off": False, "false": False}


@dataclass(frozen=True, slots=True)
class Asked:
    tracking: Tracking
    unsubscribe: bool


def _bad_field(name: str) -> Reply:
    return request_field_refusal(name, "not one of the documented values")


@dataclass(frozen=True, slots=True)
class Marks:
    links: Links
    settings: TrackingSettings

    def asked(self, requests: Sequence[tuple[str, str]]) -> Asked | Reply:
        """What the message asks for (its last field of each name wins), else the
        defaults; a value we cannot read refuses the message rather than guess."""
        tracking = parse_track(self.settings.default) or Tracking()
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
        self, asked: Asked, queue_id: str, recipients: Sequence[str], data: bytes
    ) -> bytes | None:
        """The message with its HTML parts tracked, or None when it has none."""
        recipient = recipients[0] if len(recipients) == 1 else ""
        links = self.links
        return track_message(
            data,
            pixel=links.pixel(queue_id, recipient) if asked.tracking.opens else None,
            link=(lambda url: links.click(queue_id, recipient, url))
            if asked.tracking.clicks
            else None,
        )


def marks_for(settings: Settings, links: Links) -> Marks:
    return Marks(links, settings.tracking)
