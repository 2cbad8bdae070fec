"""The ``sendgrid`` mailer: Twilio SendGrid's v3 ``mail/send`` (JSON only).

The message is rebuilt as JSON from its MIME parts (``mimeparts``); the recipients of
this delivery go in one personalization. 202 is acceptance, with the message id in the
``X-Message-Id`` header; errors come as ``{"errors": [{"message", "field"}]}``.
SendGrid refuses no single recipient at send time: suppressed addresses are accepted
and dropped later (its event webhook says so).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

import httpx

from postroom.clock import Clock
from postroom.config.providers import SendgridMailerSettings
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

__all__ = ["TABLE", "SendgridMailer", "payload"]

TABLE: Final[Table] = MappingProxyType(
    {
        **DEFAULT_TABLE,
        "400": Rule(Verdict.REJECTED, "5.6.0"),  # the request (the message) is invalid
        "401": Rule(Verdict.MISCONFIG, "4.7.0"),  # bad key, or credits exhausted
        "403": Rule(Verdict.MISCONFIG, "4.7.1"),  # sender identity not verified
    }
)


class SendgridMailer(HttpMailer):
    TABLE = TABLE
    MAX_RECIPIENTS = 1000  # its documented cap per request
    RETRY_HEADERS = (("retry-after", HintKind.SECONDS), ("x-ratelimit-reset", HintKind.EPOCH))

    def __init__(
        self,
        settings: SendgridMailerSettings,
        *,
        clock: Clock,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        key = resolve_secret(settings, environ_or(environ))
        headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        super().__init__(settings, clock=clock, headers=headers, transport=transport)

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        parsed = parse(message.data, [r.address for r in recipients])
        data, lost = payload(parsed)
        return self.client.build_request("POST", "/v3/mail/send", json=data), lost

    def read(self, answer: Answer) -> Reading:
        if 200 <= answer.status < 300:
            return Reading(provider_id=answer.headers.get("x-message-id"))
        body = answer.json()
        errors = body.get("errors") if isinstance(body, dict) else None
        if isinstance(errors, list):
            words = "; ".join(_error_text(e) for e in errors if isinstance(e, dict))
            return Reading(text=words)
        return Reading()


def _error_text(error: Mapping[str, Any]) -> str:
    field = error.get("field")
    return f"{error.get('message')} ({field})" if field else str(error.get("message"))


def _box(box: Mailbox) -> dict[str, str]:
    return {"email": box.email, "name": box.name} if box.name else {"email": box.email}


def payload(parsed: ParsedMessage) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The ``mail/send`` body for a parsed message, and what it could not carry."""
    parsed = parsed.with_to()
    lost = list(parsed.lost)
    personalization: dict[str, Any] = {"to": [_box(b) for b in parsed.to]}
    if parsed.cc:
        personalization["cc"] = [_box(b) for b in parsed.cc]
    if parsed.bcc:
        personalization["bcc"] = [_box(b) for b in parsed.bcc]
    data: dict[str, Any] = {"personalizations": [personalization], "subject": parsed.subject}
    if parsed.sender is not None:
        data["from"] = _box(parsed.sender)
    if parsed.reply_to:
        data["reply_to_list"] = [_box(b) for b in parsed.reply_to]
    # SendGrid wants text/plain first, then text/html.
    content = [("text/plain", parsed.text), ("text/html", parsed.html)]
    data["content"] = [{"type": t, "value": v} for t, v in content if v is not None]
    attachments = []
    for index, part in enumerate(parsed.attachments, start=1):
        item = {
            "content": base64_text(part.content),
            "type": part.content_type,
            "filename": part.filename or f"part-{index}",
            "disposition": "inline" if part.inline else "attachment",
        }
        if part.content_id:
            item["content_id"] = part.content_id
        attachments.append(item)
    if attachments:
        data["attachments"] = attachments
    headers = dict(parsed.headers)
    if len(headers) < len(parsed.headers):
        lost.append("repeated custom headers (SendGrid keeps one of each)")
    if parsed.message_id:
        headers["Message-ID"] = parsed.message_id
    if headers:
        data["headers"] = headers
    return data, tuple(lost)
