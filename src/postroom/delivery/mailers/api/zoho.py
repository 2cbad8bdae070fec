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
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import quote

import httpx

from postroom.clock import Clock
from postroom.config.providers import ZohoMailerSettings
from postroom.delivery.mailers.api.http import (
    DEFAULT_TABLE,
    Answer,
    NoAnswer,
    Reading,
    Rule,
    Table,
    Verdict,
    environ_or,
)
from postroom.delivery.mailers.api.jsonapi import post_json
from postroom.delivery.mailers.api.mimeparts import Attachment, Mailbox, ParsedMessage, parse
from postroom.delivery.mailers.api.oauthmailer import OAuthHttpMailer
from postroom.delivery.mailers.api.rcptsplit import split
from postroom.delivery.mailers.oauth.flow import OAuthError
from postroom.delivery.message import OutboundMessage, OutboundRecipient

__all__ = ["TABLE", "ZohoMailer", "build_send"]

TABLE: Final[Table] = MappingProxyType(
    {
        **DEFAULT_TABLE,
        "400:PATTERN_NOT_MATCHED": Rule(Verdict.MISCONFIG, "4.3.5"),  # e.g. a bad account id
        "400:EXTRA_KEY_FOUND_IN_JSON": Rule(Verdict.MISCONFIG, "4.3.5"),
        "500": Rule(Verdict.TEMPORARY, "4.3.0"),
    }
)


_SPECIALS: Final = frozenset('()<>[]:;@\\,."')


def _address(box: Mailbox) -> str:
    """``Name <addr>`` in Unicode (a JSON field, not a header: no RFC 2047 words)."""
    if not box.name:
        return box.email
    name = box.name
    if _SPECIALS & set(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{box.email}>"


def _addresses(boxes: Sequence[Mailbox]) -> str:
    return ",".join(_address(box) for box in boxes)


def build_send(
    parsed: ParsedMessage, recipients: Sequence[str], uploads: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, Any], list[str]]:
    """The send request's JSON, and what it cannot carry."""
    [group] = split(parsed, recipients)
    lost = list(parsed.lost)
    body: dict[str, Any] = {
        "fromAddress": _address(parsed.sender) if parsed.sender else "",
        "toAddress": _addresses(group.to),
        "subject": parsed.subject,
        "encoding": "UTF-8",
    }
    if group.cc:
        body["ccAddress"] = _addresses(group.cc)
    if group.bcc:
        body["bccAddress"] = _addresses(group.bcc)
    if parsed.html is not None:
        body["content"], body["mailFormat"] = parsed.html, "html"
        if parsed.text is not None:
            lost.append("the text/plain alternative (Zoho sends one body)")
    else:
        body["content"], body["mailFormat"] = parsed.text or "", "plaintext"
    if uploads:
        body["attachments"] = [dict(u) for u in uploads]
    lost.extend(f"header {name}" for name, _ in parsed.headers)
    if parsed.reply_to:
        lost.append("Reply-To")
    return body, lost


class ZohoMailer(OAuthHttpMailer):
    TABLE = TABLE
    AUTH_SCHEME = "Zoho-oauthtoken"

    def __init__(
        self,
        settings: ZohoMailerSettings,
        *,
        clock: Clock,
        data_dir: Path,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.path = f"/api/accounts/{quote(settings.account_id, safe='')}/messages"
        super().__init__(
            settings,
            settings,
            clock=clock,
            data_dir=data_dir,
            environ=environ_or(environ),
            transport=transport,
        )

    async def exchange(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[Answer | NoAnswer, tuple[str, ...]]:
        """Upload the attachments, then send; the first answer that is not a success ends it."""
        addresses = [r.address for r in recipients]
        parsed = parse(message.data, addresses)
        uploads = []
        for part in parsed.attachments:
            answer = await self._upload(part)
            if isinstance(answer, NoAnswer) or answer.status != 200:
                return answer, ()
            uploads.append(_uploaded(answer))
        body, lost = build_send(parsed, addresses, uploads)
        request = post_json(self.client, self.path, body)
        return await self._send(request), tuple(lost)

    async def _upload(self, part: Attachment) -> Answer | NoAnswer:
        params = {"fileName": part.filename or part.content_id or "attachment"}
        if part.inline:
            params["isInline"] = "true"
        request = self.client.build_request(
            "POST",
            f"{self.path}/attachments",
            params=params,
            content=part.content,
            headers={"Content-Type": "application/octet-stream"},
        )
        return await self._send(request)

    async def _send(self, request: httpx.Request) -> Answer | NoAnswer:
        try:
            response = await self.client.send(request)
            body = await response.aread()
        except OAuthError as exc:
            return NoAnswer("4.7.0", str(exc))
        except httpx.TimeoutException:
            return NoAnswer("4.4.2", f"no answer from {self.host} in time")
        except httpx.ConnectError as exc:
            return NoAnswer("4.4.1", f"cannot connect to {self.host}: {exc}")
        except httpx.TransportError as exc:
            return NoAnswer("4.4.2", f"connection to {self.host} failed: {exc!r}")
        return Answer(response.status_code, response.headers, body)

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        """The send alone (``postroom mailer test`` shows it); ``exchange`` uploads first."""
        addresses = [r.address for r in recipients]
        body, lost = build_send(parse(message.data, addresses), addresses, [])
        return post_json(self.client, self.path, body), tuple(lost)

    def read(self, answer: Answer) -> Reading:
        data = answer.json()
        if not isinstance(data, dict):
            return Reading(text=answer.text)
        status = _object(data.get("status"))
        inner = _object(data.get("data"))
        if answer.status == 200 and status.get("code", 200) == 200:
            found = inner.get("messageId")
            return Reading(provider_id=str(found) if found else None)
        code = inner.get("errorCode")
        words = " ".join(str(w) for w in (status.get("description"), inner.get("moreInfo")) if w)
        return Reading(code=str(code) if code else None, text=words)


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _uploaded(answer: Answer) -> dict[str, Any]:
    data = answer.json()
    inner = data.get("data") if isinstance(data, dict) else None
    item = inner[0] if isinstance(inner, list) and inner else inner
    if not isinstance(item, dict):
        return {}
    keys = ("storeName", "attachmentPath", "attachmentName")
    return {key: item[key] for key in keys if key in item}
