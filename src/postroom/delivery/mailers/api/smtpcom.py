"""SMTP.com API v4 (``Authorization: Bearer KEY``; every send names a ``channel``).

The message goes whole through ``POST /v4/messages/mime``: JSON with the MIME text in
``mime`` and this delivery's recipients in ``recipients`` (To and Cc as the headers
have them, the rest as Bcc), which SMTP.com delivers as given. A JSON string holds
text, so a message that is not UTF-8 (8-bit in another charset) is rebuilt from
``mimeparts`` and sent through ``POST /v4/messages`` instead. SMTP.com answers 200
``{"status": "success", "data": {...}}`` with the id in ``data.msg_id`` (or as
``msg_id: <id>`` inside ``data.message``); errors are ``{"status": "fail", "data": ...}``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

import httpx

from postroom.config.providers import SmtpcomMailerSettings
from postroom.delivery.mailers.api import http, jsonapi
from postroom.delivery.mailers.api.http import Rule, Verdict
from postroom.delivery.mailers.api.mimeparts import Mailbox, ParsedMessage, base64_text, parse
from postroom.delivery.mailers.api.rcptsplit import Addressed, split
from postroom.delivery.message import OutboundMessage, OutboundRecipient

__all__ = ["TABLE", "SmtpcomMailer", "build_fields", "build_mime"]

TABLE: Final[http.Table] = http.table(
    {"400:channel": Rule(Verdict.MISCONFIG, "4.3.5")}
)  # unknown channel

_MSG_ID: Final = re.compile(r"msg_id:\s*(\S+)")


def _boxes(boxes: Sequence[Mailbox]) -> list[dict[str, str]]:
    return jsonapi.mailbox_objects(boxes, email="address")


def _recipients(group: Addressed) -> dict[str, Any]:
    return {
        "to": _boxes(group.to),
        **jsonapi.optional({"cc": _boxes(group.cc), "bcc": _boxes(group.bcc)}),
    }


def _originator(parsed: ParsedMessage) -> dict[str, Any]:
    """The From mailbox and the first Reply-To, each one object."""
    boxes = {"from": parsed.sender, "reply_to": next(iter(parsed.reply_to), None)}
    return {key: _boxes([box])[0] for key, box in boxes.items() if box is not None}


def build_mime(channel: str, text: str, parsed: ParsedMessage, group: Addressed) -> dict[str, Any]:
    return {
        "channel": channel,
        "recipients": _recipients(group),
        "originator": _originator(parsed),
        "mime": text,
    }


def build_fields(
    channel: str, parsed: ParsedMessage, group: Addressed
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The ``messages`` body (the message rebuilt from its parts), and what it could not carry."""
    parts = [
        {"type": ctype, "charset": "UTF-8", "encoding": "quoted-printable", "content": content}
        for ctype, content in (("text/plain", parsed.text), ("text/html", parsed.html))
        if content is not None
    ]
    attachments = [
        jsonapi.optional(
            {
                "type": part.content_type,
                "disposition": "inline" if part.inline else "attachment",
                "filename": name,
                "content": base64_text(part.content),
                "encoding": "base64",
                "cid": part.content_id,
            }
        )
        for name, part in parsed.named_attachments()
    ]
    headers, repeated = jsonapi.custom_headers(parsed, "SMTP.com")
    found = {
        "channel": channel,
        "recipients": _recipients(group),
        "originator": _originator(parsed),
        "subject": parsed.subject,
        "body": {"parts": parts, **jsonapi.optional({"attachments": attachments})},
        **jsonapi.optional({"custom_headers": headers}),
    }
    return found, (*parsed.lost, *repeated)


class SmtpcomMailer(http.HttpMailer[SmtpcomMailerSettings]):
    TABLE = TABLE
    KEY_HEADER = ("Authorization", "Bearer")

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        addresses = [r.address for r in recipients]
        parsed = parse(message.data, addresses)
        [group] = split(parsed, addresses)
        channel = self.settings.channel
        try:
            text = message.data.decode("utf-8")
        except UnicodeDecodeError:
            body, lost = build_fields(channel, parsed, group)
            return jsonapi.post_json(self.client, "/v4/messages", body), lost
        body = build_mime(channel, text, parsed, group)
        return jsonapi.post_json(self.client, "/v4/messages/mime", body), ()

    def read(self, answer: http.Answer) -> http.Reading:
        data = answer.json()
        if not isinstance(data, dict):
            return http.Reading(text=answer.text)
        inner = data.get("data")
        if data.get("status") == "success" and isinstance(inner, dict):
            found = inner.get("msg_id")
            if not found and isinstance(inner.get("message"), str):
                match = _MSG_ID.search(inner["message"])
                found = match.group(1) if match else None
            return http.Reading(provider_id=http.str_or_none(found))
        if isinstance(inner, dict):
            nested = inner.get("errors")
            errors: dict[str, Any] = nested if isinstance(nested, dict) else inner
            field = next(iter(errors), None)
            words = "; ".join(f"{k}: {v}" for k, v in errors.items())
            return http.Reading(code=http.str_or_none(field), text=words)
        return http.Reading(text=str(data.get("message") or answer.text))
