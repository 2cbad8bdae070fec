"""A Python client for postroom's HTTP API (v1), for applications.

    from postroom.client import Client

    with Client("http://127.0.0.1:8025", api_key="pr_...") as client:
        result = client.send(from_="shop@example.com", to=["a@example.net"],
                             subject="Receipt", text="Thanks!")
        print(client.get(result.id).recipients[0].status)

``AsyncClient`` has the same methods as coroutines. Both build every request with one
set of functions (``_Call``) and read every answer with the same parsers, so they cannot
drift apart. Every non-2xx answer raises a ``PostroomError`` subclass chosen by HTTP
status; a transport failure (refused, reset, timed out) raises ``ConnectionError``.
This module imports nothing of the server: an application needs httpx only.
"""

from __future__ import annotations

import base64
import email.utils
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import httpx

from postroom import __version__

__all__ = [
    "AsyncClient",
    "Attachment",
    "Attempt",
    "AuthenticationError",
    "Client",
    "Conflict",
    "ConnectionError",
    "FieldError",
    "MailboxFull",
    "MessageStatus",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "PermissionDenied",
    "PostroomError",
    "RateLimited",
    "RecipientStatus",
    "SendResult",
    "ServerError",
    "Unavailable",
    "ValidationError",
]

T = TypeVar("T")
AddressLike = str | Mapping[str, str]  # "Name <a@example.com>" or {"email": ..., "name": ...}

# -- errors --------------------------------------------------------------------------


class PostroomError(Exception):
    """Any failed call: ``status`` (HTTP, None without an answer), ``code`` (the API's
    error code, e.g. ``invalid_request``) and ``message`` (one line for humans)."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class AuthenticationError(PostroomError):
    """401: the API key is missing, unknown or revoked."""


class PermissionDenied(PostroomError):
    """403: the key may not do this (e.g. send from that domain)."""


class NotFound(PostroomError):
    """404: no message with that id."""


class Conflict(PostroomError):
    """409: not possible in the message's state, or an Idempotency-Key reused."""


class PayloadTooLarge(PostroomError):
    """413: the message is larger than the server accepts."""


class MailboxFull(PostroomError):
    """507: a recipient's mailbox is full (its quota); the message was not queued."""


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


class ValidationError(PostroomError):
    """422: ``fields`` names each bad field (``to[1]``, ``attachments[0].content``)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        fields: Sequence[FieldError] = (),
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.fields = tuple(fields)


class _RetryLater(PostroomError):
    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after  # seconds, when the server said (Retry-After)


class RateLimited(_RetryLater):
    """429: too many requests for this key; try again after ``retry_after``."""


class Unavailable(_RetryLater):
    """503: the server cannot take mail now; try again after ``retry_after``."""


class ServerError(PostroomError):
    """500 or any other unexpected status."""


class ConnectionError(PostroomError):  # postroom.client.ConnectionError, not the builtin
    """No answer: the server could not be reached, or the connection failed or timed out."""


_ERRORS: Mapping[int, type[PostroomError]] = {
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationError,
    429: RateLimited,
    503: Unavailable,
    507: MailboxFull,
}

# -- results -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str | None
    content: bytes
    content_type: str = "application/octet-stream"
    content_id: str | None = None  # set: an inline part, referred to as cid:<content_id>


@dataclass(frozen=True, slots=True)
class SendResult:
    id: str
    message_id: str
    recipients: tuple[str, ...]
    status: str


@dataclass(frozen=True, slots=True)
class RecipientStatus:
    address: str
    status: str  # queued | deferred | delivered | bounced | expired | rejected
    attempts: int
    next_attempt_at: datetime | None
    last_reply: str | None


@dataclass(frozen=True, slots=True)
class Attempt:
    at: datetime
    recipient: str
    mailer: str | None
    status: str
    reply: str | None
    remote_host: str | None = None
    remote_ip: str | None = None
    provider_id: str | None = None
    duration: float | None = None


@dataclass(frozen=True, slots=True)
class MessageStatus:
    id: str
    message_id: str | None
    from_: str | None
    subject: str | None
    received_at: datetime
    size: int
    held: bool
    source_kind: str
    source_principal: str | None
    recipients: tuple[RecipientStatus, ...]
    attempts: tuple[Attempt, ...] = ()  # empty in list() summaries
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Page:
    messages: tuple[MessageStatus, ...]
    next_cursor: str | None


# -- requests: built once for both clients -------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Sequence[tuple[str, str]] = ()
    json: Any = None
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def _send_call(
    *,
    from_: AddressLike,
    to: AddressLike | Sequence[AddressLike] = (),
    cc: Sequence[AddressLike] = (),
    bcc: Sequence[AddressLike] = (),
    reply_to: Sequence[AddressLike] = (),
    subject: str | None = None,
    text: str | None = None,
    html: str | None = None,
    headers: Mapping[str, str] | None = None,
    attachments: Sequence[Attachment] = (),
    tags: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
) -> _Call[SendResult]:
    body: dict[str, Any] = {"from": _address(from_)}
    recipients = [to] if isinstance(to, str | Mapping) else list(to)
    for name, values in (("to", recipients), ("cc", cc), ("bcc", bcc), ("reply_to", reply_to)):
        if values:
            body[name] = [_address(v) for v in values]
    optional = {"subject": subject, "text": text, "html": html, "metadata": metadata}
    body.update({k: v for k, v in optional.items() if v is not None})
    if headers:
        body["headers"] = dict(headers)
    if tags:
        body["tags"] = list(tags)
    if attachments:
        body["attachments"] = [_attachment(a) for a in attachments]
    return _Call(
        "POST", "/api/v1/messages", _send_result, json=body, headers=_idem(idempotency_key)
    )


def _send_raw_call(
    message: bytes,
    mail_from: str | None,
    rcpt: Sequence[str] | None,
    idempotency_key: str | None,
) -> _Call[SendResult]:
    params = [("mail_from", mail_from)] if mail_from is not None else []
    params += [("rcpt", r) for r in rcpt or ()]
    headers = {"Content-Type": "message/rfc822", **_idem(idempotency_key)}
    return _Call(
        "POST", "/api/v1/messages", _send_result, params=params, content=message, headers=headers
    )


def _list_call(
    *,
    status: str | None,
    to: str | None,
    from_: str | None,
    since: datetime | float | str | None,
    limit: int | None,
    cursor: str | None,
) -> _Call[Page]:
    if isinstance(since, datetime):
        since = since.astimezone(UTC).isoformat().replace("+00:00", "Z")
    values = {"status": status, "to": to, "from": from_, "since": since, "limit": limit}
    values["cursor"] = cursor
    params = [(k, str(v)) for k, v in values.items() if v is not None]
    return _Call("GET", "/api/v1/messages", _page, params=params)


def _one_call(method: str, message_id: str, action: str = "") -> _Call[MessageStatus]:
    path = f"/api/v1/messages/{_segment(message_id)}{action}"
    return _Call(method, path, lambda r: _message(r.json()))


def _delete_call(message_id: str) -> _Call[None]:
    path = f"/api/v1/messages/{_segment(message_id)}"
    return _Call("DELETE", path, lambda r: None)


def _segment(message_id: str) -> str:
    """A path segment: a queue id is plain base32, anything else is refused before sending."""
    if not message_id or not message_id.isalnum():
        raise NotFound(f"no message with id {message_id!r}", status=404, code="not_found")
    return message_id


def _idem(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key is not None else {}


def _address(value: AddressLike) -> Any:
    return value if isinstance(value, str) else dict(value)


def _attachment(a: Attachment) -> dict[str, Any]:
    return {
        "filename": a.filename,
        "content_type": a.content_type,
        "content": base64.b64encode(a.content).decode("ascii"),
        "content_id": a.content_id,
    }


# -- answers -------------------------------------------------------------------------


def _send_result(response: httpx.Response) -> SendResult:
    data = response.json()
    return SendResult(
        id=data["id"],
        message_id=data["message_id"],
        recipients=tuple(data["recipients"]),
        status=data["status"],
    )


def _page(response: httpx.Response) -> Page:
    data = response.json()
    return Page(tuple(_message(m) for m in data["messages"]), data.get("next_cursor"))


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _message(data: Mapping[str, Any]) -> MessageStatus:
    source = data.get("source") or {}
    received = _time(data["received_at"])
    assert received is not None
    return MessageStatus(
        id=data["id"],
        message_id=data.get("message_id"),
        from_=data.get("from"),
        subject=data.get("subject"),
        received_at=received,
        size=data.get("size", 0),
        held=data.get("held", False),
        source_kind=source.get("kind", ""),
        source_principal=source.get("principal"),
        recipients=tuple(
            RecipientStatus(
                address=r["address"],
                status=r["status"],
                attempts=r.get("attempts", 0),
                next_attempt_at=_time(r.get("next_attempt_at")),
                last_reply=r.get("last_reply"),
            )
            for r in data.get("recipients", ())
        ),
        attempts=tuple(_attempt(a) for a in data.get("attempts", ())),
        tags=tuple(data.get("tags") or ()),
        metadata=dict(data.get("metadata") or {}),
    )


def _attempt(data: Mapping[str, Any]) -> Attempt:
    at = _time(data["at"])
    assert at is not None
    return Attempt(
        at=at,
        recipient=data["recipient"],
        mailer=data.get("mailer"),
        status=data["status"],
        reply=data.get("reply"),
        remote_host=data.get("remote_host"),
        remote_ip=data.get("remote_ip"),
        provider_id=data.get("provider_id"),
        duration=data.get("duration"),
    )


def _error(response: httpx.Response) -> PostroomError:
    try:
        body = response.json().get("error") or {}
    except (ValueError, AttributeError):
        body = {}
    status = response.status_code
    message = str(body.get("message") or response.reason_phrase or f"HTTP {status}")
    code = str(body.get("code") or "")
    kind = _ERRORS.get(status, ServerError)
    if kind is ValidationError:
        fields = [
            FieldError(str(f.get("field")), str(f.get("message"))) for f in body.get("fields") or ()
        ]
        return ValidationError(message, status=status, code=code, fields=fields)
    if issubclass(kind, _RetryLater):
        return kind(message, status=status, code=code, retry_after=_retry_after(response))
    return kind(message, status=status, code=code)


def _retry_after(response: httpx.Response) -> float | None:
    """RFC 9110 10.2.3: seconds, or an HTTP date."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def _result(call: _Call[T], response: httpx.Response) -> T:
    if response.is_success:
        return call.parse(response)
    raise _error(response)


def _request(http: httpx.Client | httpx.AsyncClient, call: _Call[Any]) -> httpx.Request:
    return http.build_request(
        call.method,
        call.path,
        params=list(call.params),
        json=call.json,
        content=call.content,
        headers=dict(call.headers),
    )


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "User-Agent": f"postroom-client/{__version__}"}


# -- the two clients -----------------------------------------------------------------


class Client:
    """Blocking client; use as a context manager or call ``close()``."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0) -> None:
        self._http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout)

    def _run(self, call: _Call[T]) -> T:
        try:
            response = self._http.send(_request(self._http, call))
        except httpx.TransportError as exc:
            raise ConnectionError(f"cannot reach postroom: {exc}") from exc
        return _result(call, response)

    def send(
        self,
        *,
        from_: AddressLike,
        to: AddressLike | Sequence[AddressLike] = (),
        cc: Sequence[AddressLike] = (),
        bcc: Sequence[AddressLike] = (),
        reply_to: Sequence[AddressLike] = (),
        subject: str | None = None,
        text: str | None = None,
        html: str | None = None,
        headers: Mapping[str, str] | None = None,
        attachments: Sequence[Attachment] = (),
        tags: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> SendResult:
        """Compose and send (the JSON form); ``to`` may be one address."""
        return self._run(
            _send_call(
                from_=from_,
                to=to,
                cc=cc,
                bcc=bcc,
                reply_to=reply_to,
                subject=subject,
                text=text,
                html=html,
                headers=headers,
                attachments=attachments,
                tags=tags,
                metadata=metadata,
                idempotency_key=idempotency_key,
            )
        )

    def send_raw(
        self,
        message: bytes,
        mail_from: str | None = None,
        rcpt: Sequence[str] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> SendResult:
        """Send finished RFC 5322 bytes; the envelope defaults to From and To/Cc/Bcc."""
        return self._run(_send_raw_call(message, mail_from, rcpt, idempotency_key))

    def get(self, message_id: str) -> MessageStatus:
        return self._run(_one_call("GET", message_id))

    def list(
        self,
        *,
        status: str | None = None,
        to: str | None = None,
        from_: str | None = None,
        since: datetime | float | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page:
        return self._run(
            _list_call(status=status, to=to, from_=from_, since=since, limit=limit, cursor=cursor)
        )

    def retry(self, message_id: str) -> MessageStatus:
        return self._run(_one_call("POST", message_id, "/retry"))

    def hold(self, message_id: str) -> MessageStatus:
        return self._run(_one_call("POST", message_id, "/hold"))

    def release(self, message_id: str) -> MessageStatus:
        return self._run(_one_call("POST", message_id, "/release"))

    def delete(self, message_id: str) -> None:
        self._run(_delete_call(message_id))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient:
    """The same calls as ``Client``, as coroutines; ``async with`` or ``await aclose()``."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout
        )

    async def _run(self, call: _Call[T]) -> T:
        try:
            response = await self._http.send(_request(self._http, call))
        except httpx.TransportError as exc:
            raise ConnectionError(f"cannot reach postroom: {exc}") from exc
        return _result(call, response)

    async def send(
        self,
        *,
        from_: AddressLike,
        to: AddressLike | Sequence[AddressLike] = (),
        cc: Sequence[AddressLike] = (),
        bcc: Sequence[AddressLike] = (),
        reply_to: Sequence[AddressLike] = (),
        subject: str | None = None,
        text: str | None = None,
        html: str | None = None,
        headers: Mapping[str, str] | None = None,
        attachments: Sequence[Attachment] = (),
        tags: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> SendResult:
        """See ``Client.send``."""
        return await self._run(
            _send_call(
                from_=from_,
                to=to,
                cc=cc,
                bcc=bcc,
                reply_to=reply_to,
                subject=subject,
                text=text,
                html=html,
                headers=headers,
                attachments=attachments,
                tags=tags,
                metadata=metadata,
                idempotency_key=idempotency_key,
            )
        )

    async def send_raw(
        self,
        message: bytes,
        mail_from: str | None = None,
        rcpt: Sequence[str] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> SendResult:
        return await self._run(_send_raw_call(message, mail_from, rcpt, idempotency_key))

    async def get(self, message_id: str) -> MessageStatus:
        return await self._run(_one_call("GET", message_id))

    async def list(
        self,
        *,
        status: str | None = None,
        to: str | None = None,
        from_: str | None = None,
        since: datetime | float | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page:
        return await self._run(
            _list_call(status=status, to=to, from_=from_, since=since, limit=limit, cursor=cursor)
        )

    async def retry(self, message_id: str) -> MessageStatus:
        return await self._run(_one_call("POST", message_id, "/retry"))

    async def hold(self, message_id: str) -> MessageStatus:
        return await self._run(_one_call("POST", message_id, "/hold"))

    async def release(self, message_id: str) -> MessageStatus:
        return await self._run(_one_call("POST", message_id, "/release"))

    async def delete(self, message_id: str) -> None:
        await self._run(_delete_call(message_id))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
