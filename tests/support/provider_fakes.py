"""Loopback fakes of Mailjet, SendLayer, SMTP.com, Gmail, Microsoft Graph and Zoho Mail.

Each checks a request the way the documented endpoint does (method, path, auth header,
content type, required fields, base64 encodings) and answers a malformed one with 400
while noting the ``problem`` (tests assert there is none). ``replies`` queues answers
to give instead of success (error shapes, 429, 5xx, ``Reply(stall=True)``,
``Reply(drop=True)``). What a request carried is kept in ``received`` for checks field
by field. OAuth fakes accept only access tokens their token endpoint handed out.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from tests.support.http_fake import Reply, Request
from tests.support.oauth_fake import TokenEndpoint

__all__ = [
    "GmailFake",
    "GraphFake",
    "MailjetFake",
    "SendlayerFake",
    "SmtpcomFake",
    "ZohoFake",
    "parse_mime",
]


def parse_mime(data: bytes) -> EmailMessage:
    message = BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def _b64(value: object, *, urlsafe: bool = False) -> bytes:
    if not isinstance(value, str):
        raise ValueError("not a base64 string")
    if urlsafe:
        if "+" in value or "/" in value:
            raise ValueError("not base64url")
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    return base64.b64decode(value, validate=True)


class Malformed(Exception):
    pass


def need(condition: object, problem: str) -> None:
    if not condition:
        raise Malformed(problem)


@dataclass
class Fake:
    replies: list[Reply] = field(default_factory=list)
    received: list[Any] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __call__(self, request: Request) -> Reply:
        try:
            auth = self.authorize(request)
            if auth is not None:
                return auth
            payload = self.check(request)
        except (Malformed, ValueError, KeyError, TypeError, binascii.Error) as exc:
            self.problems.append(f"{request.method} {request.path}: {exc}")
            return Reply.json(400, {"fake": str(exc)})
        if self.replies:
            return self.replies.pop(0)
        self.received.append(payload)
        return self.success(request, payload)

    def authorize(self, request: Request) -> Reply | None:
        return None

    def check(self, request: Request) -> Any:
        raise NotImplementedError

    def success(self, request: Request, payload: Any) -> Reply:
        raise NotImplementedError

    def json_body(self, request: Request, path: str) -> Any:
        need(request.method == "POST", f"method {request.method}")
        need(request.path == path, f"path {request.path}")
        need(request.headers.get("content-type", "").startswith("application/json"), "JSON")
        return request.json()


# -- API-key providers ------------------------------------------------------------------


@dataclass
class MailjetFake(Fake):
    """``POST /v3.1/send``; ``invalid`` addresses fail their message (mixed 400)."""

    key: str = "mj-key"
    secret: str = "mj-secret"
    invalid: set[str] = field(default_factory=set)

    def authorize(self, request: Request) -> Reply | None:
        expected = "Basic " + base64.b64encode(f"{self.key}:{self.secret}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return Reply.json(
                401,
                {"ErrorIdentifier": "x", "ErrorCode": "mj-0001", "StatusCode": 401,
                 "ErrorMessage": "API key authentication/authorization failure"},
            )  # fmt: skip
        return None

    def check(self, request: Request) -> Any:
        body = self.json_body(request, "/v3.1/send")
        messages = body["Messages"]
        need(isinstance(messages, list) and 1 <= len(messages) <= 50, "Messages")
        for message in messages:
            need("@" in message["From"]["Email"], "From.Email")
            need(isinstance(message["Subject"], str), "Subject")
            need("TextPart" in message or "HTMLPart" in message, "a body")
            for name in ("To", "Cc", "Bcc"):
                boxes = message.get(name, [])
                need(len(boxes) <= 50, f"{name} over 50")
                need(all("@" in box["Email"] for box in boxes), f"{name}[].Email")
            need(message["To"], "To")
            for part in message.get("Attachments", []) + message.get("InlinedAttachments", []):
                _b64(part["Base64Content"])
                need(part["ContentType"] and part["Filename"], "attachment fields")
            for part in message.get("InlinedAttachments", []):
                need(part["ContentID"], "ContentID")
        return body

    def success(self, request: Request, payload: Any) -> Reply:
        results, failed = [], False
        for message in payload["Messages"]:
            errors = [
                {"ErrorIdentifier": str(uuid.uuid4()), "ErrorCode": "mj-0013", "StatusCode": 400,
                 "ErrorMessage": f'"{box["Email"]}" is an invalid email address.',
                 "ErrorRelatedTo": [f"{name}[{i}].Email"]}
                for name in ("To", "Cc", "Bcc")
                for i, box in enumerate(message.get(name, []))
                if box["Email"] in self.invalid
            ]  # fmt: skip
            if errors:
                failed = True
                results.append({"Status": "error", "Errors": errors})
                continue
            entry: dict[str, Any] = {"Status": "success", "CustomID": message.get("CustomID", "")}
            for name in ("To", "Cc", "Bcc"):
                entry[name] = [
                    {"Email": box["Email"], "MessageUUID": str(uuid.uuid4()),
                     "MessageID": 576460750000000000 + next(self._ids),
                     "MessageHref": "https://api.mailjet.com/v3/REST/message/x"}
                    for box in message.get(name, [])
                ]  # fmt: skip
            results.append(entry)
        return Reply.json(400 if failed else 200, {"Messages": results})


@dataclass
class SendlayerFake(Fake):
    key: str = "sl-key"
    suppressed: set[str] = field(default_factory=set)

    def authorize(self, request: Request) -> Reply | None:
        if request.headers.get("authorization") != f"Bearer {self.key}":
            return Reply.json(401, {"Errors": [{"Code": 13, "Message": "Invalid SenderAPIKey"}]})
        return None

    def check(self, request: Request) -> Any:
        body = self.json_body(request, "/api/v1/email")
        need("@" in body["From"]["email"], "From.email")
        for name, limit in (("To", 10), ("CC", 10), ("BCC", 5)):
            boxes = body.get(name, [])
            need(len(boxes) <= limit, f"{name} over {limit}")
            need(all("@" in b["email"] for b in boxes), f"{name}[].email")
        need(body["To"], "To")
        need(body["ContentType"] in ("HTML", "plain"), "ContentType")
        need(body["ContentType"] != "HTML" or body["HTMLContent"], "HTMLContent")
        for part in body.get("Attachments", []):
            _b64(part["Content"])
            need(part["Disposition"] in ("attachment", "inline"), "Disposition")
            need(part["Type"] and part["Filename"], "attachment fields")
        return body

    def success(self, request: Request, payload: Any) -> Reply:
        boxes = payload["To"] + payload.get("CC", []) + payload.get("BCC", [])
        if any(b["email"] in self.suppressed for b in boxes):
            return Reply.json(
                422, {"Errors": [{"Code": 14, "Message": "Recipient email is suppressed"}]}
            )
        return Reply.json(200, {"MessageID": str(uuid.uuid4())})


@dataclass
class SmtpcomFake(Fake):
    key: str = "sc-key"
    channel: str = "transactional"

    def authorize(self, request: Request) -> Reply | None:
        if request.headers.get("authorization") != f"Bearer {self.key}":
            return Reply.json(401, {"status": "fail", "data": {"message": "Invalid API Key"}})
        return None

    def check(self, request: Request) -> Any:
        path = "/v4/messages/mime" if request.path.endswith("/mime") else "/v4/messages"
        body = self.json_body(request, path)
        if body.get("channel") != self.channel:
            raise Malformed("channel")
        need(body["recipients"]["to"], "recipients.to")
        for name in ("to", "cc", "bcc"):
            need(all("@" in b["address"] for b in body["recipients"].get(name, [])), name)
        need("@" in body["originator"]["from"]["address"], "originator.from")
        if path.endswith("/mime"):
            need(isinstance(body["mime"], str) and "\n\n" in body["mime"].replace("\r", ""), "mime")
        else:
            need(body["body"]["parts"], "body.parts")
            for part in body["body"].get("attachments", []):
                _b64(part["content"])
        return body

    def success(self, request: Request, payload: Any) -> Reply:
        return Reply.json(200, {"status": "success", "data": {"msg_id": f"sc-{next(self._ids)}"}})


# -- OAuth providers ----------------------------------------------------------------------


@dataclass
class OAuthFake(Fake):
    tokens: TokenEndpoint = field(default_factory=TokenEndpoint)
    expired: set[str] = field(default_factory=set)  # tokens the API no longer takes
    scheme: str = "Bearer"
    unauthorized: Callable[[], Reply] = field(default=lambda: Reply(401))

    def authorize(self, request: Request) -> Reply | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != self.scheme or token not in self.tokens.access_tokens or token in self.expired:
            return self.unauthorized()
        return None


def _google_error(code: int, reason: str, message: str) -> Reply:
    return Reply.json(
        code,
        {"error": {"code": code, "message": message,
                   "errors": [{"domain": "global", "reason": reason, "message": message}]}},
    )  # fmt: skip


@dataclass
class GmailFake(OAuthFake):
    user: str = "me"
    unauthorized: Callable[[], Reply] = field(
        default=lambda: _google_error(401, "authError", "Invalid Credentials")
    )

    def check(self, request: Request) -> Any:
        body = self.json_body(request, f"/gmail/v1/users/{self.user}/messages/send")
        message = parse_mime(_b64(body["raw"], urlsafe=True))
        need(message["To"] or message["Cc"] or message["Bcc"], "Recipient address required")
        return message

    def success(self, request: Request, payload: Any) -> Reply:
        return Reply.json(
            200, {"id": f"18c{next(self._ids):013x}", "threadId": "18c0", "labelIds": ["SENT"]}
        )


def graph_error(status: int, code: str, message: str) -> Reply:
    inner = {"date": "2027-01-15T08:00:00", "request-id": str(uuid.uuid4())}
    return Reply.json(status, {"error": {"code": code, "message": message, "innerError": inner}})


@dataclass
class GraphFake(OAuthFake):
    unauthorized: Callable[[], Reply] = field(
        default=lambda: graph_error(401, "InvalidAuthenticationToken", "Access token has expired.")
    )

    def check(self, request: Request) -> Any:
        need(request.method == "POST" and request.path == "/v1.0/me/sendMail", "endpoint")
        need(request.headers.get("content-type") == "text/plain", "Content-Type text/plain")
        try:
            data = _b64(request.body.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise Malformed("Invalid base64 string for MIME content.") from exc
        return parse_mime(data)

    def success(self, request: Request, payload: Any) -> Reply:
        return Reply(202)


@dataclass
class ZohoFake(OAuthFake):
    account_id: str = "6000000001"
    scheme: str = "Zoho-oauthtoken"
    uploads: dict[str, tuple[str, bytes, bool]] = field(default_factory=dict)
    unauthorized: Callable[[], Reply] = field(
        default=lambda: Reply.json(
            401, {"status": {"code": 401, "description": "Invalid Input"},
                  "data": {"errorCode": "INVALID_OAUTHTOKEN"}},
        )
    )  # fmt: skip

    def check(self, request: Request) -> Any:
        base = f"/api/accounts/{self.account_id}/messages"
        if request.path == f"{base}/attachments":
            need(request.headers.get("content-type") == "application/octet-stream", "octet-stream")
            name = request.query["fileName"][0]
            inline = request.query.get("isInline", ["false"])[0] == "true"
            return ("upload", name, request.body, inline)
        body = self.json_body(request, base)
        need("@" in body["fromAddress"], "fromAddress")
        need(body["toAddress"], "toAddress")
        need(body["mailFormat"] in ("html", "plaintext"), "mailFormat")
        for item in body.get("attachments", []):
            need(item["storeName"] in self.uploads, "attachments[].storeName")
            need(item["attachmentPath"] == f"/{item['storeName']}", "attachmentPath")
        return body

    def success(self, request: Request, payload: Any) -> Reply:
        if isinstance(payload, tuple):
            _, name, data, inline = payload
            store = f"store{next(self._ids)}"
            self.uploads[store] = (name, data, inline)
            return Reply.json(
                200,
                {"status": {"code": 200, "description": "success"},
                 "data": {"storeName": store, "attachmentPath": f"/{store}",
                          "attachmentName": name}},
            )  # fmt: skip
        return Reply.json(
            200,
            {"status": {"code": 200, "description": "success"},
             "data": {"messageId": f"17{next(self._ids):08d}", "subject": payload["subject"]}},
        )  # fmt: skip
