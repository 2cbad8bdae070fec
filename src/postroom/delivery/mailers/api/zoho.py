"""Zoho Mail API ``POST /api/accounts/{accountId}/messages`` (OAuth 2.0, JSON).

Zoho rebuilds the message from JSON fields (``mimeparts``): addresses as comma-separated
strings, one body (HTML when there is one, else plain text), no custom headers and no
Reply-To (both recorded as not carried). Attachments are uploaded first
(``POST .../messages/attachments?fileName=...``, the raw bytes; inline images with
``isInline=true``), and the send names what the uploads returned. Answers are
``{"status": {"code", "description"}, "data": {...}}``; the message id is
``data.messageId``, an error's code ``data.errorCode``. The token goes as
``Authorization: Zoho-oauthtoken <token>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote

import httpx

from postroom.config.providers import ZohoMailerSettings
from postroom.delivery.mailers.api import http, jsonapi
from postroom.delivery.mailers.api.http import Rule, Verdict
from postroom.delivery.mailers.api.mimeparts import Mailbox, ParsedMessage, parse
from postroom.delivery.mailers.api.oauthmailer import OAuthHttpMailer
from postroom.delivery.mailers.api.rcptsplit import split
from postroom.delivery.message import OutboundMessage, OutboundRecipient

__all__ = ["TABLE", "ZohoMailer", "build_send"]

TABLE: Final[http.Table] = http.table(
    {
        "400:PATTERN_NOT_MATCHED": Rule(Verdict.MISCONFIG, "4.3.5"),  # e.g. a bad account id
        "400:EXTRA_KEY_FOUND_IN_JSON": Rule(Verdict.MISCONFIG, "4.3.5"),
        "500": Rule(Verdict.TEMPORARY, "4.3.0"),
    }
)


def _addresses(boxes: Sequence[Mailbox]) -> str:
    """``Name <addr>`` in Unicode (a JSON field, not a header: no RFC 2047 words)."""
    return ",".join(box.formatted() for box in boxes)


def build_send(
    parsed: ParsedMessage, recipients: Sequence[str], uploads: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, Any], list[str]]:
    """The send request's JSON, and what it cannot carry."""
    [group] = split(parsed, recipients)
    lost = list(parsed.lost)
    if parsed.html is not None:
        content, mail_format = parsed.html, "html"
        if parsed.text is not None:
            lost.append("the text/plain alternative (Zoho sends one body)")
    else:
        content, mail_format = parsed.text or "", "plaintext"
    lost.extend(f"header {name}" for name, _ in parsed.headers)
    if parsed.reply_to:
        lost.append("Reply-To")
    body = {
        "fromAddress": parsed.sender.formatted() if parsed.sender else "",
        "toAddress": _addresses(group.to),
        "subject": parsed.subject,
        "encoding": "UTF-8",
        "content": content,
        "mailFormat": mail_format,
        **jsonapi.optional(
            {
                "ccAddress": _addresses(group.cc) or None,
                "bccAddress": _addresses(group.bcc) or None,
                "attachments": [dict(u) for u in uploads],
            }
        ),
    }
    return body, lost


class ZohoMailer(OAuthHttpMailer[ZohoMailerSettings]):
    TABLE = TABLE
    AUTH_SCHEME = "Zoho-oauthtoken"

    @property
    def path(self) -> str:
        return f"/api/accounts/{quote(self.settings.account_id, safe='')}/messages"

    async def exchange(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[http.Answer | http.NoAnswer, tuple[str, ...]]:
        """Upload the attachments, then send; the first answer that is not a success ends it."""
        addresses = [r.address for r in recipients]
        parsed = parse(message.data, addresses)
        uploads = []
        for name, part in parsed.named_attachments():
            params = jsonapi.optional(
                {"fileName": name, "isInline": "true" if part.inline else None}
            )
            upload = self.client.build_request(
                "POST",
                f"{self.path}/attachments",
                params=params,
                content=part.content,
                headers={"Content-Type": "application/octet-stream"},
            )
            answer = await self.send(upload)
            if isinstance(answer, http.NoAnswer) or answer.status != 200:
                return answer, ()
            uploads.append(_uploaded(answer))
        body, lost = build_send(parsed, addresses, uploads)
        return await self.send(jsonapi.post_json(self.client, self.path, body)), tuple(lost)

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        """The send alone (``postroom mailer test`` shows it); ``exchange`` uploads first."""
        addresses = [r.address for r in recipients]
        body, lost = build_send(parse(message.data, addresses), addresses, [])
        return jsonapi.post_json(self.client, self.path, body), tuple(lost)

    def read(self, answer: http.Answer) -> http.Reading:
        data = answer.json()
        if not isinstance(data, dict):
            return http.Reading(text=answer.text)
        status = _object(data.get("status"))
        inner = _object(data.get("data"))
        if answer.status == 200 and status.get("code", 200) == 200:
            return http.Reading(provider_id=http.str_or_none(inner.get("messageId")))
        words = " ".join(str(w) for w in (status.get("description"), inner.get("moreInfo")) if w)
        return http.Reading(code=http.str_or_none(inner.get("errorCode")), text=words)


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _uploaded(answer: http.Answer) -> dict[str, Any]:
    data = answer.json()
    inner = data.get("data") if isinstance(data, dict) else None
    item = inner[0] if isinstance(inner, list) and inner else inner
    if not isinstance(item, dict):
        return {}
    keys = ("storeName", "attachmentPath", "attachmentName")
    return {key: item[key] for key in keys if key in item}
