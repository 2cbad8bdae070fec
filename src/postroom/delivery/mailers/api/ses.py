"""The ``ses`` mailer: Amazon SES API v2 ``SendEmail`` with ``Content.Raw`` (SigV4).

The queued message goes base64-encoded as it is, so headers and DKIM signatures
survive; ``Destination`` is the envelope (the recipients of this delivery, sorted into
To, Cc and Bcc by the message's headers, so Bcc recipients stay hidden). Requests are
signed with SigV4 (service ``ses``, ``sigv4.py``) at the time the clock gives.
200 ``{"MessageId"}`` is acceptance; errors are named by the ``x-amzn-ErrorType``
header or the body's ``__type``/``code``: ``MessageRejected`` bounces, a sending pause
or an unverified MAIL FROM domain waits for an operator, ``TooManyRequestsException``
(429) is throttling.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from postroom.clock import Clock
from postroom.config.providers import SesMailerSettings
from postroom.delivery.mailers.api import http
from postroom.delivery.mailers.api.http import Rule, Verdict
from postroom.delivery.mailers.api.mimeparts import base64_text, parse
from postroom.delivery.mailers.api.sigv4 import Credentials, sign
from postroom.delivery.message import OutboundMessage, OutboundRecipient

__all__ = ["TABLE", "SesMailer", "SigV4"]

_CONF: Final = Rule(Verdict.MISCONFIG, "4.3.5")
TABLE: Final[http.Table] = http.table(
    {
        "400:MessageRejected": Rule(Verdict.REJECTED, "5.7.1"),
        "400:BadRequestException": Rule(Verdict.REJECTED, "5.6.0"),
        "400:MailFromDomainNotVerifiedException": _CONF,
        "400:AccountSuspendedException": _CONF,
        "400:SendingPausedException": _CONF,
        "400:LimitExceededException": Rule(Verdict.THROTTLED, "4.7.0"),
        "404:NotFoundException": _CONF,  # e.g. no such configuration set
        "400": Rule(Verdict.REJECTED, "5.6.0"),
    }
)
_PATH: Final = "/v2/email/outbound-emails"


class SigV4(httpx.Auth):
    """Signs each request, its body and content type included, for ``service`` in
    ``region`` at the clock's time."""

    requires_request_body = True

    def __init__(self, credentials: Credentials, region: str, clock: Clock) -> None:
        self._credentials = credentials
        self._region = region
        self._clock = clock

    def __repr__(self) -> str:
        return "<SigV4>"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        url = request.url
        content_type = request.headers.get("content-type")
        request.headers.update(
            sign(
                request.method,
                request.headers.get("host") or url.netloc.decode("ascii"),
                path=url.path,
                query=url.params.multi_items(),
                headers={"Content-Type": content_type} if content_type else {},
                body=request.content,
                credentials=self._credentials,
                region=self._region,
                service="ses",
                when=datetime.fromtimestamp(self._clock.time(), UTC),
            )
        )
        yield request


class SesMailer(http.HttpMailer[SesMailerSettings]):
    TABLE = TABLE

    def credentials(self, environ: Mapping[str, str]) -> http.Credentials:
        secret = http.resolve_secret(self.settings, environ)
        key_id = http.resolve_secret(self.settings, environ, value="access_key_id")
        signer = SigV4(Credentials(key_id, secret), self.settings.region, self.clock)
        return http.Credentials(auth=signer)

    def request(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> tuple[httpx.Request, tuple[str, ...]]:
        parsed = parse(message.data, [r.address for r in recipients])
        destination = {
            key: [b.email for b in boxes]
            for key, boxes in (
                ("ToAddresses", parsed.to),
                ("CcAddresses", parsed.cc),
                ("BccAddresses", parsed.bcc),
            )
            if boxes
        }
        data: dict[str, Any] = {
            "Destination": destination,
            "Content": {"Raw": {"Data": base64_text(message.data)}},
        }
        if self.settings.configuration_set:
            data["ConfigurationSetName"] = self.settings.configuration_set
        body = json.dumps(data).encode()
        headers = {"Content-Type": "application/json"}
        return self.client.build_request("POST", _PATH, content=body, headers=headers), ()

    def read(self, answer: http.Answer) -> http.Reading:
        body = answer.json()
        body = body if isinstance(body, dict) else {}
        if 200 <= answer.status < 300:
            return http.Reading(provider_id=http.str_or_none(body.get("MessageId")))
        kind = answer.headers.get("x-amzn-errortype") or body.get("__type") or body.get("code")
        kind = body.get("Code") if kind is None else kind
        code = str(kind).split(":")[0].split("#")[-1] if kind else None
        words = body.get("message") or body.get("Message") or ""
        return http.Reading(code=code, text=f"{code}: {words}" if code else str(words))
