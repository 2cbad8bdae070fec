"""The ``ses`` mailer: Amazon SES API v2 ``SendEmail`` with ``Content.Raw`` (SigV4).

The queued message goes base64-encoded as it is, so headers and DKIM signatures
survive; ``Destination`` is the envelope (the recipients of this delivery, sorted into
To, Cc and Bcc by the message's headers, so Bcc recipients stay hidden). Requests are
signed with botocore's SigV4 (service ``ses``). 200 ``{"MessageId"}`` is acceptance;
errors are named by the ``x-amzn-ErrorType`` header or the body's ``__type``/``code``:
``MessageRejected`` bounces, a sending pause or an unverified MAIL FROM domain waits
for an operator, ``TooManyRequestsException`` (429) is throttling.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from postroom.clock import Clock
from postroom.config.providers import SesMailerSettings
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
from postroom.delivery.mailers.api.mimeparts import base64_text, parse
from postroom.delivery.message import OutboundMessage, OutboundRecipient

__all__ = ["TABLE", "SesMailer", "SigV4"]

_CONF: Final = Rule(Verdict.MISCONFIG, "4.3.5")
TABLE: Final[Table] = MappingProxyType(
    {
        **DEFAULT_TABLE,
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
    """Signs each request with AWS Signature Version 4 (botocore's signer)."""

    requires_request_body = True

    def __init__(self, access_key_id: str, secret_access_key: str, region: str) -> None:
        self._signer = SigV4Auth(Credentials(access_key_id, secret_access_key), "ses", region)

    def __repr__(self) -> str:
        return "<SigV4>"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        signed = AWSRequest(
            method=request.method,
            url=str(request.url),
            data=request.content,
            headers={"Content-Type": request.headers.get("content-type", "")},
        )
        self._signer.add_auth(signed)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            if name in signed.headers:
                request.headers[name] = signed.headers[name]
        yield request


class SesMailer(HttpMailer):
    TABLE = TABLE

    def __init__(
        self,
        settings: SesMailerSettings,
        *,
        clock: Clock,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        env = environ_or(environ)
        secret = resolve_secret(settings, env)
        key_id = resolve_secret(settings, env, value="access_key_id")
        auth = SigV4(key_id, secret, settings.region)
        super().__init__(settings, clock=clock, auth=auth, transport=transport)
        self.configuration_set = settings.configuration_set

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
        if self.configuration_set:
            data["ConfigurationSetName"] = self.configuration_set
        body = json.dumps(data).encode()
        headers = {"Content-Type": "application/json"}
        return self.client.build_request("POST", _PATH, content=body, headers=headers), ()

    def read(self, answer: Answer) -> Reading:
        body = answer.json()
        body = body if isinstance(body, dict) else {}
        if 200 <= answer.status < 300:
            ident = body.get("MessageId")
            return Reading(provider_id=str(ident) if ident else None)
        kind = answer.headers.get("x-amzn-errortype") or body.get("__type") or body.get("code")
        kind = body.get("Code") if kind is None else kind
        code = str(kind).split(":")[0].split("#")[-1] if kind else None
        words = body.get("message") or body.get("Message") or ""
        return Reading(code=code, text=f"{code}: {words}" if code else str(words))
