"""The API's bodies as pydantic models: requests are validated by them, answers are built
from them, and ``openapi.py`` publishes their JSON Schemas, so the document and the
server cannot drift apart."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from postroom.directory.apikeys import Scope

__all__ = [
    "AddressIn",
    "AttachmentIn",
    "AttemptOut",
    "ErrorBody",
    "ErrorDetail",
    "ErrorField",
    "Health",
    "MessageDetail",
    "MessageList",
    "MessageSummary",
    "RecipientOut",
    "SendAccepted",
    "SendRequest",
    "SourceOut",
]

MAX_TAGS = 20
MAX_METADATA = 50

Tag = Annotated[str, Field(min_length=1, max_length=64)]
MetaKey = Annotated[str, Field(min_length=1, max_length=64)]
MetaValue = Annotated[str, Field(max_length=1024)]


class _In(BaseModel):
    # Unknown fields are errors: a typo ("bbc") must not silently drop recipients.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _Out(BaseModel):
    # Closed shapes: the OpenAPI document then says no other field ever appears.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class AddressIn(_In):
    email: str
    name: str = ""


AddressField = str | AddressIn


class AttachmentIn(_In):
    filename: str | None = None
    content_type: str = "application/octet-stream"
    content: Annotated[str, Field(description="The bytes, base64-encoded")]
    content_id: Annotated[
        str | None, Field(description="Set: an inline part, referred to as cid:<content_id>")
    ] = None


class SendRequest(_In):
    """A message as fields. At least one of to/cc/bcc; at least one of text/html."""

    sender: Annotated[AddressField, Field(alias="from")]
    to: AddressField | list[AddressField] = []
    cc: list[AddressField] = []
    bcc: list[AddressField] = []
    reply_to: list[AddressField] = []
    subject: str = ""
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] = {}
    attachments: list[AttachmentIn] = []
    tags: Annotated[list[Tag], Field(max_length=MAX_TAGS)] = []
    metadata: Annotated[dict[MetaKey, MetaValue], Field(max_length=MAX_METADATA)] = {}


class SendAccepted(_Out):
    id: str
    message_id: str
    recipients: list[str]
    status: Literal["queued"] = "queued"


class SourceOut(_Out):
    kind: str  # smtp | api | sendmail | dsn
    principal: str | None


RecipientStatusName = Literal["queued", "deferred", "delivered", "bounced", "expired"]


class RecipientOut(_Out):
    address: str
    status: RecipientStatusName
    attempts: int
    next_attempt_at: str | None
    last_reply: str | None


class AttemptOut(_Out):
    at: str
    recipient: str
    mailer: str
    status: Literal["delivered", "deferred", "bounced"]
    reply: str
    remote_host: str | None
    remote_ip: str | None
    provider_id: str | None
    duration: float


class MessageSummary(_Out):
    id: str
    message_id: str | None
    sender: Annotated[str, Field(alias="from")]
    subject: str | None
    received_at: str
    size: int
    held: bool
    source: SourceOut
    tags: list[str]
    metadata: dict[str, str]
    recipients: list[RecipientOut]


class MessageDetail(MessageSummary):
    attempts: list[AttemptOut]


class MessageList(_Out):
    messages: list[MessageSummary]
    next_cursor: str | None


class ErrorField(_Out):
    field: str
    message: str


class ErrorDetail(_Out):
    status: int
    code: Literal[
        "unauthorized",
        "forbidden",
        "not_found",
        "method_not_allowed",
        "conflict",
        "payload_too_large",
        "invalid_request",
        "rate_limited",
        "internal",
        "unavailable",
    ]
    message: str
    fields: list[ErrorField] | None = None  # 422: each bad field
    scope: Scope | None = None  # 403: the scope the API key lacks


class ErrorBody(_Out):
    error: ErrorDetail


class Health(_Out):
    status: Literal["ok"] = "ok"
