"""The API's bodies as pydantic models: requests are validated by them, answers are built
from them, and ``openapi.py`` publishes their JSON Schemas, so the document and the
server cannot drift apart."""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from postroom.directory.apikeys import Scope
from postroom.intake.compose import (
    CONTENT_ID,
    CONTENT_TYPE,
    HEADER_NAME,
    RESERVED_HEADERS,
)
from postroom.mail.events import EventOrigin, EventType
from postroom.mail.labels import (
    LINE_BREAKS,
    MAX_KEY,
    MAX_METADATA,
    MAX_TAG,
    MAX_TAGS,
    MAX_VALUE,
)
from postroom.store.models import SuppressionReason, WebhookState

__all__ = [
    "AddressIn",
    "AttachmentIn",
    "AttemptOut",
    "ErrorBody",
    "ErrorDetail",
    "ErrorField",
    "FailingPart",
    "Health",
    "MessageDetail",
    "MessageList",
    "MessageSummary",
    "Readiness",
    "RecipientOut",
    "SendAccepted",
    "SendRequest",
    "SourceOut",
]


def _one_of(characters: str) -> str:
    """A JSON Schema (ECMA-262) character class body: each character as a \\uXXXX escape."""
    return "".join(f"\\u{ord(c):04x}" for c in characters)


# One line: none of str.splitlines' separators, no NUL (intake.compose refuses them too).
LINE = f"^[^{_one_of(LINE_BREAKS)}\\u0000]*$"
# A custom header's name: RFC 5322 ftext within one line, and none of the fields postroom
# sets itself, in any case (character classes: JSON Schema has no case-insensitive flag).
HEADER_NAME_PATTERN = f"^{HEADER_NAME}$"
RESERVED_PATTERN = (
    "^(?:"
    + "|".join(
        "".join(f"[{c.upper()}{c}]" if c.isalpha() else c for c in name)  # letters and "-"
        for name in sorted(RESERVED_HEADERS)
    )
    + ")$"
)
# The log's "since": Unix seconds, or an RFC 3339 date-time (5.6) with its zone.
UNIX_SECONDS = "^[0-9]{1,12}(?:[.][0-9]{1,9})?$"
RFC3339 = (
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:[.][0-9]{1,9})?"
    "(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
BASE64 = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def _keys_by_property_names(schema: dict[str, Any]) -> None:
    """pydantic states a dict's key pattern as patternProperties, which leaves keys that do
    not match it free; as propertyNames it makes them invalid, as they are to the server."""
    patterns = schema.pop("patternProperties", None)
    if patterns:
        ((pattern, values),) = patterns.items()
        schema["propertyNames"] = {**schema.get("propertyNames", {}), "pattern": pattern}
        schema["additionalProperties"] = values


def _header_names(schema: dict[str, Any]) -> None:
    _keys_by_property_names(schema)
    schema["propertyNames"]["not"] = {"pattern": RESERVED_PATTERN}


Line = Annotated[str, Field(pattern=LINE)]
Tag = Annotated[str, Field(min_length=1, max_length=MAX_TAG, pattern=LINE)]
MetaKey = Annotated[str, Field(min_length=1, max_length=MAX_KEY, pattern=LINE)]
MetaValue = Annotated[str, Field(max_length=MAX_VALUE, pattern=LINE)]
HeaderName = Annotated[str, Field(pattern=HEADER_NAME_PATTERN)]
Email = Annotated[str, Field(json_schema_extra={"format": "email"}, pattern=LINE)]


# Each model's validator and serializer are built when it is first used (defer_build),
# not at import: a server whose API is seldom called needs few of them (about 0.35 MiB
# of the primary's memory when none is built).
class _In(BaseModel):
    # Unknown fields are errors: a typo ("bbc") must not silently drop recipients.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)


class _Out(BaseModel):
    # Closed shapes: the OpenAPI document then says no other field ever appears.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)


class AddressIn(_In):
    email: Email
    name: Line = ""


AddressField = (
    Annotated[Email, Field(description="local@domain or Name <local@domain>")] | AddressIn
)


class AttachmentIn(_In):
    filename: Annotated[Line, Field(min_length=1)] | None = None
    content_type: Annotated[str, Field(pattern=f"^{CONTENT_TYPE}$")] = "application/octet-stream"
    content: Annotated[str, Field(description="The bytes, base64-encoded", pattern=BASE64)]
    content_id: Annotated[
        str | None,
        Field(
            description="Set: an inline part, referred to as cid:<content_id>",
            pattern=f"^{CONTENT_ID}$",
        ),
    ] = None


def _nonempty(field: str, schema: JsonDict) -> JsonDict:
    return {"required": [field], "properties": {field: schema}}


# What pydantic cannot say of SendRequest: at least one recipient (a single address, or a
# list with one in to, cc or bcc) and at least one body (text or html, not null).
_AT_LEAST_ONE: Final[JsonDict] = {
    "allOf": [
        {
            "anyOf": [
                _nonempty("to", {"not": {"type": "array", "maxItems": 0}}),
                _nonempty("cc", {"minItems": 1}),
                _nonempty("bcc", {"minItems": 1}),
            ]
        },
        {"anyOf": [_nonempty("text", {"type": "string"}), _nonempty("html", {"type": "string"})]},
    ]
}


class SendRequest(_In):
    """A message as fields. At least one of to/cc/bcc; at least one of text/html."""

    model_config = ConfigDict(json_schema_extra=_AT_LEAST_ONE)

    sender: Annotated[AddressField, Field(alias="from")]
    to: AddressField | list[AddressField] = []
    cc: list[AddressField] = []
    bcc: list[AddressField] = []
    reply_to: list[AddressField] = []
    subject: Line = ""
    text: str | None = None  # any character (a NUL goes quoted-printable)
    html: str | None = None
    # Reserved names are refused by intake.compose; the document says so with "not".
    headers: Annotated[dict[HeaderName, Line], Field(json_schema_extra=_header_names)] = {}
    attachments: list[AttachmentIn] = []
    tags: Annotated[list[Tag], Field(max_length=MAX_TAGS)] = []
    metadata: Annotated[
        dict[MetaKey, MetaValue],
        Field(max_length=MAX_METADATA, json_schema_extra=_keys_by_property_names),
    ] = {}
    # Open and click tracking (true: both), and List-Unsubscribe; absent: [tracking]'s.
    track: bool | list[Literal["opens", "clicks"]] | None = None
    unsubscribe: bool | None = None


class SendAccepted(_Out):
    id: str
    message_id: str
    recipients: list[str]
    status: Literal["queued"] = "queued"


class SourceOut(_Out):
    kind: str  # smtp | api | sendmail | dsn
    principal: str | None
    dsn_of: Annotated[
        str | None,
        Field(description="for a DSN postroom made: the id of the message it reports on"),
    ] = None


RecipientStatusName = Literal["queued", "deferred", "delivered", "bounced", "expired", "rejected"]


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
    route: Annotated[
        str | None,
        Field(description="the route the attempt took, as decided then; null: not recorded"),
    ]
    route_reason: Annotated[
        str | None,
        Field(
            description="why that route and mailer: the conditions that matched, 'default: ...'"
            " or 'failover after MAILER failed: REPLY'"
        ),
    ]


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
    # retention.bodies_days removed the message's body; its log stays until retention.days
    body_removed: bool


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
        "insufficient_storage",
    ]
    message: str
    fields: list[ErrorField] | None = None  # 422: each bad field
    scope: Scope | None = None  # 403: the scope the API key lacks


class ErrorBody(_Out):
    error: ErrorDetail


class Health(_Out):
    status: Literal["ok"] = "ok"


class FailingPart(_Out):
    part: str  # a supervised task's name, "scheduler" or "store"
    reason: str
    since: float  # Unix time of the first failure in this run of failures
    failures: int


class Readiness(_Out):
    status: Literal["ready", "failing"]
    failing: list[FailingPart] = Field(default_factory=list)
    # Only under delivery.paused: mail is accepted and queued, none is delivered (no failure).
    delivery: Literal["paused"] | None = None


# -- events, suppressions, webhooks ------------------------------------------------------

# A domain name in ASCII (IDNs as A-labels, "xn--..."), as the suppression scopes take
# it; "" for the global scope.
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DOMAIN = f"^(?:{_LABEL}(?:[.]{_LABEL})*)?$"
MAX_NOTE = 1000  # characters of a suppression's detail
StringMap = dict[str, str]


class EventOut(_Out):
    """One event of the catalogue (docs/events.md), as webhooks get it."""

    id: str
    type: EventType
    timestamp: str
    queue_id: str | None
    message_id: str | None
    recipient: str
    sender: str | None
    mailer: str | None
    reply: str
    reason: str
    origin: EventOrigin
    tags: list[str]
    metadata: StringMap
    details: StringMap


class EventList(_Out):
    events: list[EventOut]


class SuppressionOut(_Out):
    address: str
    scope: str  # "" for the global scope
    reason: SuppressionReason
    source: str
    created_at: str
    detail: str


class SuppressionList(_Out):
    suppressions: list[SuppressionOut]
    next_cursor: str | None


class SuppressionIn(_In):
    address: Email
    scope: Annotated[str, Field(max_length=253, pattern=DOMAIN)] | None = None
    reason: SuppressionReason = SuppressionReason.MANUAL
    detail: Annotated[str, Field(max_length=MAX_NOTE, pattern=LINE)] | None = None


class WebhookOut(_Out):
    name: str
    url: str
    events: list[EventType]
    tags: list[str]
    pending: int


class WebhookList(_Out):
    webhooks: list[WebhookOut]
    not_fanned_out: int


class WebhookDeliveryOut(_Out):
    webhook: str
    state: WebhookState
    attempts: int
    next_attempt_at: str | None
    last_attempt_at: str | None
    last_status: int | None
    last_error: str
    event: EventOut


class WebhookDeliveryList(_Out):
    deliveries: list[WebhookDeliveryOut]


class HookAnswer(BaseModel):
    """What a provider's callback is answered (its counts; SNS's subscription)."""

    model_config = ConfigDict(extra="allow", frozen=True, defer_build=True)
