"""The ``brevo`` mailer: Brevo's ``smtp/email`` (JSON only).

201 ``{"messageId": "<...>"}`` is acceptance. Brevo takes one Reply-To and attachments
without a Content-ID, so inline images arrive as plain attachments: both are noted on
the attempt. Errors come as ``{"code", "message"}``; 429 carries
``x-sib-ratelimit-reset`` (seconds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

import httpx

from postroom.clock import Clock
from postroom.config.providers import BrevoMailerSettings
from postroom.delivery.mailers.api.http import (
    DEFAULT_TABLE,
    Answer,
    HintKind,
    HttpMailer,
    Reading,
    Rule,
    Table,
    Verdict,
    environ_or,
    resolve_secret,
)
from postroom.delivery.mailers.api.mimeparts import Mailbox, ParsedMessage, base64_text, parse
from postroom.delivery.message import OutboundMessage, OutboundRecipient

__all__ = ["TABLE", "BrevoMailer", "payload"]

TABLE: Final[Table] = MappingProxyType(
    {
        **DEFAULT_TABLE,
        "400": Rule(Verdict.REJECTED, "5.6.0"),  # {"code": "invalid_parameter", ...}
        "402": Rule(Verdict.MISCONFIG, "4.3.5"),  # out of credits: the account, not the mail
    }
)


class BrevoMailer(HttpMailer):
    TABLE = TABLE
    RETRY_HEADERS = (("retry-after", HintKind.SECONDS), ("x-sib-ratelimit-reset", HintKind.SECONDS))

    def __init__(
        self,
        settings: BrevoMailerSettings,
        *,
        clock: Clock,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        key = resolve_secret(settings, environ_or(environ))
        headers = {"api-key": key, "Accept": "application/json"}
        super().__init__(settings, clock=clock, headers=headers, transport=transport)

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        data, lost = payload(parse(message.data, [r.address for r in recipients]))
        return self.client.build_request("POST", "/v3/smtp/email", json=data), lost

    def read(self, answer: Answer) -> Reading:
        body = answer.json()
        if not isinstance(body, dict):
            return Reading()
        ident = body.get("messageId")
        words = str(body.get("message", ""))
        return Reading(code=body.get("code"), text=words, provider_id=str(ident) if ident else None)


def _box(box: Mailbox) -> dict[str, str]:
    return {"email": box.email, "name": box.name} if box.name else {"email": box.email}


def payload(parsed: ParsedMessage) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The ``smtp/email`` body for a parsed message, and what it could not carry."""
    parsed = parsed.with_to()
    lost = list(parsed.lost)
    data: dict[str, Any] = {"subject": parsed.subject, "to": [_box(b) for b in parsed.to]}
    if parsed.sender is not None:
        data["sender"] = _box(parsed.sender)
    for key, boxes in (("cc", parsed.cc), ("bcc", parsed.bcc)):
        if boxes:
            data[key] = [_box(b) for b in boxes]
    if parsed.reply_to:
        data["replyTo"] = _box(parsed.reply_to[0])
        if len(parsed.reply_to) > 1:
            lost.append("Reply-To addresses after the first")
    if parsed.text is not None:
        data["textContent"] = parsed.text
    if parsed.html is not None:
        data["htmlContent"] = parsed.html
    headers = dict(parsed.headers)
    if len(headers) < len(parsed.headers):
        lost.append("repeated custom headers (Brevo keeps one of each)")
    if parsed.message_id:
        headers["Message-Id"] = parsed.message_id
    if headers:
        data["headers"] = headers
    attachments = []
    for index, part in enumerate(parsed.attachments, start=1):
        name = part.filename or f"part-{index}"
        attachments.append({"name": name, "content": base64_text(part.content)})
        if part.content_id:
            lost.append(f"Content-ID <{part.content_id}> of {name} (sent as an attachment)")
    if attachments:
        data["attachment"] = attachments
    return data, tuple(lost)
