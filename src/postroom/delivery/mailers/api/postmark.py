"""The ``postmark`` mailer: Postmark's ``email`` endpoint (JSON only), server token,
message stream.

Postmark answers 200 with ``ErrorCode: 0`` on acceptance; when some recipients are
inactive (hard-bounced or complained before) it still says 200, naming them in
``Message``: those recipients bounce, the others are accepted. A 422 carries
``ErrorCode``: 406 (every recipient inactive) and 300 (an invalid address or request)
bounce; 10 (a bad token) waits for an operator.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

import httpx

from postroom.clock import Clock
from postroom.config.providers import PostmarkMailerSettings
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
from postroom.delivery.mailers.api.mimeparts import ParsedMessage, base64_text, parse
from postroom.delivery.message import OutboundMessage, OutboundRecipient

__all__ = ["TABLE", "PostmarkMailer", "payload"]

_SUPPRESSED: Final = Rule(Verdict.REJECTED, "5.7.1")
TABLE: Final[Table] = MappingProxyType(
    {
        **DEFAULT_TABLE,
        "200:406": _SUPPRESSED,  # inactive recipients named in an accepted answer
        "422:406": _SUPPRESSED,
        "422:300": Rule(Verdict.REJECTED, "5.1.3"),  # invalid email request (bad address)
        "422:10": Rule(Verdict.MISCONFIG, "4.7.0"),  # bad or missing server token
        "401": Rule(Verdict.MISCONFIG, "4.7.0"),
        "422": Rule(Verdict.REJECTED, "5.6.0"),
    }
)
_INACTIVE = re.compile(r"inactive addresses:\s*(?P<list>[^.]*(?:\.[^\s.][^.]*)*)", re.IGNORECASE)


class PostmarkMailer(HttpMailer):
    TABLE = TABLE

    def __init__(
        self,
        settings: PostmarkMailerSettings,
        *,
        clock: Clock,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        token = resolve_secret(settings, environ_or(environ))
        headers = {"X-Postmark-Server-Token": token, "Accept": "application/json"}
        super().__init__(settings, clock=clock, headers=headers, transport=transport)
        self.stream = settings.message_stream

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        data, lost = payload(parse(message.data, [r.address for r in recipients]), self.stream)
        return self.client.build_request("POST", "/email", json=data), lost

    def read(self, answer: Answer) -> Reading:
        body = answer.json()
        if not isinstance(body, dict):
            return Reading()
        code, words = body.get("ErrorCode"), str(body.get("Message", ""))
        ident = body.get("MessageID")
        refused: dict[str, str] = {}
        if 200 <= answer.status < 300 and (found := _INACTIVE.search(words)):
            refused = {a.strip(): "406" for a in found["list"].split(",") if a.strip()}
        return Reading(
            code=None if code in (None, 0) else str(code),
            text=words,
            provider_id=str(ident) if ident else None,
            refused=refused,
        )


def payload(parsed: ParsedMessage, stream: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The ``email`` body for a parsed message, and what it could not carry."""
    parsed = parsed.with_to()
    data: dict[str, Any] = {"Subject": parsed.subject, "MessageStream": stream}
    if parsed.sender is not None:
        data["From"] = parsed.sender.formatted()
    for key, boxes in (("To", parsed.to), ("Cc", parsed.cc), ("Bcc", parsed.bcc)):
        if boxes:
            data[key] = ", ".join(b.formatted() for b in boxes)
    if parsed.reply_to:
        data["ReplyTo"] = ", ".join(b.formatted() for b in parsed.reply_to)
    if parsed.text is not None:
        data["TextBody"] = parsed.text
    if parsed.html is not None:
        data["HtmlBody"] = parsed.html
    headers = [{"Name": name, "Value": value} for name, value in parsed.headers]
    if parsed.message_id:
        headers.append({"Name": "Message-ID", "Value": parsed.message_id})
    if headers:
        data["Headers"] = headers
    attachments = []
    for index, part in enumerate(parsed.attachments, start=1):
        item = {
            "Name": part.filename or f"part-{index}",
            "Content": base64_text(part.content),
            "ContentType": part.content_type,
        }
        if part.content_id:
            item["ContentID"] = f"cid:{part.content_id}"
        attachments.append(item)
    if attachments:
        data["Attachments"] = attachments
    return data, parsed.lost
