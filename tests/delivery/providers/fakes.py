"""Loopback fakes of SendGrid, Mailgun, Postmark, SparkPost, Amazon SES v2, Brevo and Resend.

Each checks a request as the documented endpoint does (method, path, auth, content
type, required fields, base64) and answers a malformed one with 400 while noting the
``problem`` (tests assert there is none); a wrong key gets the provider's own 401 shape.
``replies`` queues answers to give instead of success (error shapes, 429, 5xx,
``Reply(stall=True)``, ``Reply(drop=True)``); what a request carried is kept in
``received`` so tests check it field by field.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from tests.delivery.providers.sigv4 import SignatureProblem, verify
from tests.support.http_fake import Reply, Request

__all__ = [
    "BrevoFake",
    "Fake",
    "MailgunFake",
    "PostmarkFake",
    "ResendFake",
    "SendgridFake",
    "SesFake",
    "SparkpostFake",
    "b64",
    "form_parts",
    "parse_mime",
]


class Malformed(Exception):
    pass


def need(condition: object, problem: str) -> None:
    if not condition:
        raise Malformed(problem)


def b64(value: object) -> bytes:
    need(isinstance(value, str), "base64 must be a string")
    assert isinstance(value, str)
    return base64.b64decode(value, validate=True)


def parse_mime(data: bytes) -> EmailMessage:
    message = BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def form_parts(request: Request) -> dict[str, tuple[bytes, str | None, str]]:
    """A multipart/form-data body (RFC 7578), split by hand so a part's bytes stay exact:
    field name -> (content, filename, content type)."""
    ctype = request.headers.get("content-type", "")
    need(ctype.startswith("multipart/form-data; boundary="), f"content type {ctype!r}")
    delimiter = b"--" + ctype.split("boundary=", 1)[1].strip('"').encode()
    chunks = request.body.split(b"\r\n" + delimiter)
    need(chunks[0].startswith(delimiter) and chunks[-1].startswith(b"--"), "multipart framing")
    chunks[0] = chunks[0][len(delimiter) :]
    parts: dict[str, tuple[bytes, str | None, str]] = {}
    for chunk in chunks[:-1]:
        head, _, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = parse_mime(head + b"\r\n\r\n")
        name = headers.get_param("name", header="content-disposition")
        need(isinstance(name, str), "part without a name")
        filename = headers.get_param("filename", header="content-disposition")
        parts[str(name)] = (
            content,
            str(filename) if isinstance(filename, str) else None,
            headers.get_content_type() if "content-type" in headers else "text/plain",
        )
    return parts


@dataclass
class Fake:
    replies: list[Reply] = field(default_factory=list)
    received: list[Any] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __call__(self, request: Request) -> Reply:
        try:
            refused = self.authorize(request)
            if refused is not None:
                return refused
            payload = self.check(request)
        except (
            Malformed,
            SignatureProblem,
            ValueError,
            KeyError,
            TypeError,
            binascii.Error,
        ) as exc:
            self.problems.append(f"{request.method} {request.path}: {exc}")
            return Reply.json(400, {"fake": str(exc)})
        if self.replies:
            return self.replies.pop(0)
        self.received.append(payload)
        return self.success(payload)

    def authorize(self, request: Request) -> Reply | None:
        return None

    def check(self, request: Request) -> Any:
        raise NotImplementedError

    def success(self, payload: Any) -> Reply:
        raise NotImplementedError

    def json_body(self, request: Request, path: str) -> Any:
        need(request.method == "POST", f"method {request.method}")
        need(request.path == path, f"path {request.path}")
        need(request.headers.get("content-type", "").startswith("application/json"), "JSON")
        return request.json()

    def next_id(self) -> int:
        return next(self._ids)


def _boxes(value: Any, name: str) -> list[dict[str, str]]:
    need(isinstance(value, list), f"{name} must be a list")
    for box in value:
        need(isinstance(box, dict) and "@" in box["email"], f"{name}[].email")
        need(set(box) <= {"email", "name"}, f"{name}[] keys")
    return list(value)


@dataclass
class SendgridFake(Fake):
    """``POST /v3/mail/send``: 202 with ``X-Message-Id``."""

    key: str = "SG.key"

    def authorize(self, request: Request) -> Reply | None:
        if request.headers.get("authorization") != f"Bearer {self.key}":
            body = {
                "errors": [
                    {
                        "field": None,
                        "message": "The provided authorization grant is invalid, expired, or "
                        "revoked",
                        "help": None,
                    }
                ]
            }
            return Reply.json(401, body)
        return None

    def check(self, request: Request) -> Any:
        need(request.headers.get("accept") == "application/json", "Accept")
        body = self.json_body(request, "/v3/mail/send")
        [personalization] = body["personalizations"]
        _boxes(personalization["to"], "to")
        for name in ("cc", "bcc"):
            _boxes(personalization.get(name, []), name)
        _boxes([body["from"]], "from")
        need(isinstance(body["subject"], str), "subject")
        content = body["content"]
        need(content and content[0]["type"] == "text/plain", "text/plain first")
        for part in body.get("attachments", []):
            b64(part["content"])
            need(part["filename"] and part["type"], "attachment fields")
            need(part["disposition"] in ("inline", "attachment"), "disposition")
        need(all(isinstance(v, str) for v in body.get("headers", {}).values()), "headers")
        return body

    def success(self, payload: Any) -> Reply:
        return Reply(202, b"", {"X-Message-Id": f"sg-{self.next_id()}"})


@dataclass
class MailgunFake(Fake):
    """``POST /v3/<domain>/messages.mime``: form ``to`` + file ``message``."""

    key: str = "mg-key"
    domain: str = "mg.example.org"

    def authorize(self, request: Request) -> Reply | None:
        expected = "Basic " + base64.b64encode(f"api:{self.key}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return Reply(401, b"Forbidden", {"Content-Type": "text/plain"})
        return None

    def check(self, request: Request) -> Any:
        need(request.method == "POST", "method")
        if request.path != f"/v3/{self.domain}/messages.mime":
            raise Malformed(f"path {request.path}")
        parts = form_parts(request)
        to, _, _ = parts["to"]
        data, filename, _ = parts["message"]
        need(filename is not None, "'message' parameter is not a file")
        need(to and all("@" in a for a in to.decode().split(",")), "'to' is not a valid address")
        return {"to": to.decode().split(","), "message": data}

    def success(self, payload: Any) -> Reply:
        ident = f"<mg-{self.next_id()}@{self.domain}>"
        return Reply.json(200, {"id": ident, "message": "Queued. Thank you."})


@dataclass
class PostmarkFake(Fake):
    """``POST /email``; ``inactive`` recipients are named in a 200 (or 422/406 if all)."""

    token: str = "pm-token"
    inactive: set[str] = field(default_factory=set)

    def authorize(self, request: Request) -> Reply | None:
        if request.headers.get("x-postmark-server-token") != self.token:
            body = {
                "ErrorCode": 10,
                "Message": "The Server Token you provided in the X-Postmark-Server-Token "
                "request header was invalid.",
            }
            return Reply.json(401, body)
        return None

    def check(self, request: Request) -> Any:
        need(request.headers.get("accept") == "application/json", "Accept")
        body = self.json_body(request, "/email")
        need("@" in body["From"], "From")
        need("TextBody" in body or "HtmlBody" in body, "TextBody or HtmlBody")
        need(isinstance(body["MessageStream"], str), "MessageStream")
        for header in body.get("Headers", []):
            need(set(header) == {"Name", "Value"}, "Headers[]")
        for part in body.get("Attachments", []):
            b64(part["Content"])
            need(part["Name"] and part["ContentType"], "attachment fields")
            need(part.get("ContentID", "cid:").startswith("cid:"), "ContentID")
        return body

    def success(self, payload: Any) -> Reply:
        fields = ("To", "Cc", "Bcc")
        everyone = [a.strip() for f in fields for a in payload.get(f, "").split(",") if a.strip()]
        addresses = [a.rsplit("<", 1)[-1].rstrip(">") for a in everyone]
        inactive = [a for a in addresses if a in self.inactive]
        if inactive and len(inactive) == len(addresses):
            message = f"You tried to send to recipient(s) that have been marked as inactive. Found inactive addresses: {', '.join(inactive)}. Inactive recipients are ones that have generated a hard bounce or a spam complaint."  # noqa: E501
            return Reply.json(422, {"ErrorCode": 406, "Message": message})
        message = "OK"
        if inactive:
            message = f"Message OK, but will not deliver to these inactive addresses: {', '.join(inactive)}. Inactive recipients are ones that have generated a hard bounce or a spam complaint."  # noqa: E501
        ident = f"pm-{self.next_id()}"
        body = {"To": payload.get("To", ""), "SubmittedAt": "2027-01-15T10:00:00Z",
                "MessageID": ident, "ErrorCode": 0, "Message": message}  # fmt: skip
        return Reply.json(200, body)


@dataclass
class SparkpostFake(Fake):
    """``POST /api/v1/transmissions`` with ``content.email_rfc822``."""

    key: str = "sp-key"
    suppressed: set[str] = field(default_factory=set)

    def authorize(self, request: Request) -> Reply | None:
        if request.headers.get("authorization") != self.key:
            return Reply.json(401, {"errors": [{"message": "Unauthorized."}]})
        return None

    def check(self, request: Request) -> Any:
        body = self.json_body(request, "/api/v1/transmissions")
        recipients = body["recipients"]
        need(recipients and all("@" in r["address"]["email"] for r in recipients), "recipients")
        raw = body["content"]["email_rfc822"]
        need(isinstance(raw, str) and "\r\n.\r\n" not in raw, "email_rfc822")
        need(parse_mime(raw.encode())["From"], "email_rfc822 is not a message")
        return body

    def success(self, payload: Any) -> Reply:
        rcpts = [r["address"]["email"] for r in payload["recipients"]]
        if len(rcpts) == 1 and rcpts[0] in self.suppressed:
            error = {
                "message": "Message generation rejected",
                "description": "recipient address was suppressed due to customer policy",
                "code": "1902",
            }
            results = {"total_rejected_recipients": 1, "total_accepted_recipients": 0}
            return Reply.json(400, {"errors": [error], "results": results})
        results = {"total_rejected_recipients": 0, "total_accepted_recipients": len(rcpts),
                   "id": str(11668787484950529 + self.next_id())}  # fmt: skip
        return Reply.json(200, {"results": results})


@dataclass
class SesFake(Fake):
    """``POST /v2/email/outbound-emails`` (SendEmail, ``Content.Raw``), SigV4-checked."""

    access_key_id: str = "AKIDEXAMPLE"
    secret: str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    region: str = "eu-west-1"
    configuration_set: str | None = None
    now: Callable[[], float] = time.time  # the mailer's clock, to check the request's time

    def authorize(self, request: Request) -> Reply | None:
        try:
            verify(
                method=request.method,
                path=request.path,
                query="",
                headers=request.headers,
                body=request.body,
                secrets={self.access_key_id: self.secret},
                region=self.region,
                service="ses",
                now=datetime.fromtimestamp(self.now(), UTC),
            )
        except SignatureProblem as exc:
            self.problems.append(f"signature: {exc}")
            body = {
                "message": "The request signature we calculated does not match the "
                "signature you provided."
            }
            return Reply.json(403, body, **{"x-amzn-ErrorType": "SignatureDoesNotMatch:"})
        return None

    def check(self, request: Request) -> Any:
        body = self.json_body(request, "/v2/email/outbound-emails")
        raw = b64(body["Content"]["Raw"]["Data"])
        need(parse_mime(raw)["From"], "Raw.Data is not a message")
        destination = body["Destination"]
        need(set(destination) <= {"ToAddresses", "CcAddresses", "BccAddresses"}, "Destination")
        need(sum(len(v) for v in destination.values()) <= 50, "over 50 recipients")
        need(body.get("ConfigurationSetName") == self.configuration_set, "ConfigurationSetName")
        return {**body, "raw": raw}

    def success(self, payload: Any) -> Reply:
        return Reply.json(200, {"MessageId": f"0100018e-ses-{self.next_id()}"})


@dataclass
class BrevoFake(Fake):
    """``POST /v3/smtp/email``: 201 ``{"messageId"}``."""

    key: str = "xkeysib-key"

    def authorize(self, request: Request) -> Reply | None:
        if request.headers.get("api-key") != self.key:
            return Reply.json(401, {"code": "unauthorized", "message": "Key not found"})
        return None

    def check(self, request: Request) -> Any:
        need(request.headers.get("accept") == "application/json", "Accept")
        body = self.json_body(request, "/v3/smtp/email")
        _boxes([body["sender"]], "sender")
        _boxes(body["to"], "to")
        need("htmlContent" in body or "textContent" in body, "content")
        if "replyTo" in body:
            _boxes([body["replyTo"]], "replyTo")
        for part in body.get("attachment", []):
            b64(part["content"])
            need(set(part) == {"name", "content"}, "attachment fields")
        return body

    def success(self, payload: Any) -> Reply:
        return Reply.json(201, {"messageId": f"<2027011510.{self.next_id()}@smtp-relay.mailin.fr>"})


@dataclass
class ResendFake(Fake):
    """``POST /emails``: 200 ``{"id"}``; one answer per ``Idempotency-Key``."""

    key: str = "re_key"
    keys: dict[str, str] = field(default_factory=dict)

    def authorize(self, request: Request) -> Reply | None:
        if "authorization" not in request.headers:
            return Reply.json(
                401,
                {
                    "statusCode": 401,
                    "message": "Missing API key in the authorization header.",
                    "name": "missing_api_key",
                },
            )
        if request.headers["authorization"] != f"Bearer {self.key}":
            return Reply.json(
                403, {"statusCode": 403, "message": "API key is invalid", "name": "invalid_api_key"}
            )
        return None

    def check(self, request: Request) -> Any:
        body = self.json_body(request, "/emails")
        need("@" in body["from"], "from")
        need(isinstance(body["to"], list) and 1 <= len(body["to"]) <= 50, "to")
        need("html" in body or "text" in body, "html or text")
        for part in body.get("attachments", []):
            b64(part["content"])
            need(part["filename"], "filename")
        key = request.headers.get("idempotency-key", "")
        need(0 < len(key) <= 256, "Idempotency-Key")
        return {**body, "idempotency_key": key}

    def success(self, payload: Any) -> Reply:
        key = payload["idempotency_key"]
        ident = self.keys.setdefault(key, f"re-{self.next_id()}")
        return Reply.json(200, {"id": ident})
