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
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

import httpx

from postroom.clock import Clock
from postroom.config.providers import SmtpcomMailerSettings
from postroom.delivery.mailers.api.http import (
    DEFAULT_TABLE,
    Answer,
    HttpMailer,
    Reading,
    Rule,
    Table,
    Verdict,
    environ_or,
    resolve_secret,
)
from postroom.delivery.mailers.api.jsonapi import b64, post_json
from postroom.delivery.mailers.api.mimeparts import Mailbox, ParsedMessage, parse
from postroom.delivery.mailers.api.rcptsplit import Addressed, split
from postroom.delivery.message import OutboundMessage, OutboundRecipient

__all__ = ["TABLE", "SmtpcomMailer", "build_fields", "build_mime"]

TABLE: Final[Table] = MappingProxyType(
    {**DEFAULT_TABLE, "400:channel": Rule(Verdict.MISCONFIG, "4.3.5")}  # unknown channel
)

_MSG_ID: Final = re.compile(r"msg_id:\s*(\S+)")


def _boxes(boxes: Sequence[Mailbox]) -> list[dict[str, str]]:
    return [{"name": b.name, "address": b.email} if b.name else {"address": b.email} for b in boxes]


def _recipients(group: Addressed) -> dict[str, Any]:
    found: dict[str, Any] = {"to": _boxes(group.to)}
    if group.cc:
        found["cc"] = _boxes(group.cc)
    if group.bcc:
        found["bcc"] = _boxes(group.bcc)
    return found


def _originator(parsed: ParsedMessage) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if parsed.sender is not None:
        found["from"] = _boxes([parsed.sender])[0]
    if parsed.reply_to:
        found["reply_to"] = _boxes(parsed.reply_to)[0]
    return found


def build_mime(channel: str, text: str, parsed: ParsedMessage, group: Addressed) -> dict[str, Any]:
    return {
        "channel": channel,
        "recipients": _recipients(group),
        "originator": _originator(parsed),
        "mime": text,
    }


def build_fields(channel: str, parsed: ParsedMessage, group: Addressed) -> dict[str, Any]:
    parts = [
        {"type": ctype, "charset": "UTF-8", "encoding": "quoted-printable", "content": content}
        for ctype, content in (("text/plain", parsed.text), ("text/html", parsed.html))
        if content is not None
    ]
    body: dict[str, Any] = {"parts": parts}
    if parsed.attachments:
        body["attachments"] = [
            {
                "type": part.content_type,
                "disposition": "inline" if part.inline else "attachment",
                "filename": part.filename or part.content_id or "attachment",
                "content": b64(part.content),
                "encoding": "base64",
                **({"cid": part.content_id} if part.content_id else {}),
            }
            for part in parsed.attachments
        ]
    found: dict[str, Any] = {
        "channel": channel,
        "recipients": _recipients(group),
        "originator": _originator(parsed),
        "subject": parsed.subject,
        "body": body,
    }
    if parsed.headers:
        found["custom_headers"] = dict(parsed.headers)
    return found


class SmtpcomMailer(HttpMailer):
    TABLE = TABLE

    def __init__(
        self,
        settings: SmtpcomMailerSettings,
        *,
        clock: Clock,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.channel = settings.channel
        key = resolve_secret(settings, environ_or(environ))
        headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        super().__init__(settings, clock=clock, headers=headers, transport=transport)

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        addresses = [r.address for r in recipients]
        parsed = parse(message.data, addresses)
        [group] = split(parsed, addresses)
        try:
            text = message.data.decode("utf-8")
        except UnicodeDecodeError:
            body = build_fields(self.channel, parsed, group)
            request = post_json(self.client, "/v4/messages", body)
            return request, parsed.lost
        body = build_mime(self.channel, text, parsed, group)
        return post_json(self.client, "/v4/messages/mime", body), ()

    def read(self, answer: Answer) -> Reading:
        data = answer.json()
        if not isinstance(data, dict):
            return Reading(text=answer.text)
        inner = data.get("data")
        if data.get("status") == "success" and isinstance(inner, dict):
            found = inner.get("msg_id")
            if not found and isinstance(inner.get("message"), str):
                match = _MSG_ID.search(inner["message"])
                found = match.group(1) if match else None
            return Reading(provider_id=str(found) if found else None)
        if isinstance(inner, dict):
            nested = inner.get("errors")
            errors: dict[str, Any] = nested if isinstance(nested, dict) else inner
            field = next(iter(errors), None)
            words = "; ".join(f"{k}: {v}" for k, v in errors.items())
            return Reading(code=str(field) if field else None, text=words)
        return Reading(text=str(data.get("message") or answer.text))
