"""Request JSON -> a ComposeRequest, and pydantic's errors -> 422 field paths."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from postroom.api.errors import ApiError
from postroom.api.schemas import (
    BASE64,
    HEADER_NAME_PATTERN,
    LINE,
    AddressIn,
    AttachmentIn,
    SendRequest,
)
from postroom.intake.compose import (
    Attachment,
    ComposedMessage,
    ComposeError,
    ComposeRequest,
    Mailbox,
    mailbox,
    parse_mailbox,
)

__all__ = [
    "compose_request",
    "field_path",
    "least_size",
    "lone_surrogate",
    "parse_send",
    "validation_fields",
    "with_envelope",
]

_ADDRESS_FIELDS = frozenset({"from", "to", "cc", "bcc", "reply_to"})
_ADDRESS_HINT = "must be an address: a string or an object with email and name"
_SURROGATE = re.compile("[\ud800-\udfff]")
_PATTERN_MESSAGES = {
    LINE: "must be one line: no CR, LF, NUL or other line break (U+2028 and the like)",
    HEADER_NAME_PATTERN: "not a valid header name",
    BASE64: "not valid base64",
}


def field_path(loc: Iterable[int | str]) -> str:
    """("to", 1) -> "to[1]"; ("headers", "X-Foo") -> "headers.X-Foo"."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def _is_union_tag(part: int | str) -> bool:
    # pydantic names the union member it tried: "str", "AddressIn", "list[...]".
    return isinstance(part, str) and (
        part in ("str", "constrained-str", "AddressIn") or part.startswith("list[")
    )


def _message(error: ErrorDetails, loc: Sequence[int | str]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if loc and loc[0] in _ADDRESS_FIELDS and kind in ("string_type", "model_type"):
        return _ADDRESS_HINT
    if kind == "string_pattern_mismatch":
        pattern = (error.get("ctx") or {}).get("pattern")
        return _PATTERN_MESSAGES.get(str(pattern), error["msg"])
    return error["msg"]


def validation_fields(errors: Sequence[ErrorDetails]) -> list[tuple[str, str]]:
    """One message per field path, in order; union attempts folded into one."""
    found: dict[str, str] = {}
    for error in errors:
        loc = [p for p in error["loc"] if not _is_union_tag(p)]
        path = field_path(loc)
        message = _message(error, loc)
        found.setdefault(path, message)
    # A union reports each member it tried; the deepest paths say what is really wrong.
    return [
        (path, message)
        for path, message in found.items()
        if not any(other.startswith((f"{path}[", f"{path}.")) for other in found)
    ]


def lone_surrogate(data: Any) -> str | None:
    """The path of the first string holding a lone surrogate, which JSON's ``\\ud800``
    escapes can carry but UTF-8 cannot; None when there is none. A key holding one is
    named by its container, as the path is sent back. (A loop, not recursion: the
    document may be nested as deep as the JSON parser allows.)"""
    pending: list[tuple[str, Any]] = [("", data)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return path or "body"
        elif isinstance(value, dict):
            if any(_SURROGATE.search(key) for key in value):
                return path or "body"
            items = [(f"{path}.{key}" if path else key, inner) for key, inner in value.items()]
            pending.extend(reversed(items))
        elif isinstance(value, list):
            pending.extend(reversed([(f"{path}[{i}]", v) for i, v in enumerate(value)]))
    return None


M = TypeVar("M", bound=BaseModel)


def parse_send(data: Any) -> SendRequest:
    return parse_model(SendRequest, data)


def parse_model(model: type[M], data: Any) -> M:
    """``data`` (a parsed JSON document) as ``model``, or ApiError 422 naming each field."""
    if (path := lone_surrogate(data)) is not None:
        raise ApiError.invalid([(path, "not valid Unicode: a lone surrogate")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError.invalid(validation_fields(exc.errors())) from None


def _mailbox(value: str | AddressIn, path: str) -> Mailbox:
    if isinstance(value, str):
        return parse_mailbox(value, path)
    return mailbox(value.email, value.name, path)


def _mailboxes(
    values: str | AddressIn | list[str | AddressIn], name: str, problems: list[tuple[str, str]]
) -> tuple[Mailbox, ...]:
    if not isinstance(values, list):
        values = [values]
    found = []
    for index, value in enumerate(values):
        try:
            found.append(_mailbox(value, f"{name}[{index}]"))
        except ComposeError as exc:
            problems.extend(exc.problems)
    return tuple(found)


def _attachment(item: AttachmentIn, path: str, problems: list[tuple[str, str]]) -> Attachment:
    try:
        content = base64.b64decode(item.content, validate=True)
    except (binascii.Error, ValueError):
        problems.append((f"{path}.content", "not valid base64"))
        content = b""
    return Attachment(content, item.content_type, item.filename, item.content_id)


def least_size(request: SendRequest) -> int:
    """Bytes the composed message has at least: each attachment's base64 as sent, in
    76-character lines (RFC 2045 6.8), and the bodies. Over the size limit, the message
    need not be built to be refused."""
    attachments = sum(len(a.content) * 78 // 76 for a in request.attachments)
    return attachments + len(request.text or "") + len(request.html or "")


def compose_request(request: SendRequest) -> ComposeRequest:
    """The fields as compose() takes them; ApiError 422 naming every bad one."""
    problems: list[tuple[str, str]] = []
    sender: Mailbox | None = None
    try:
        sender = _mailbox(request.sender, "from")
    except ComposeError as exc:
        problems.extend(exc.problems)
    boxes = {
        name: _mailboxes(getattr(request, name), name, problems)
        for name in ("to", "cc", "bcc", "reply_to")
    }
    attachments = tuple(
        _attachment(item, f"attachments[{i}]", problems)
        for i, item in enumerate(request.attachments)
    )
    if problems or sender is None:
        raise ApiError.invalid(problems)
    return ComposeRequest(
        sender=sender,
        to=boxes["to"],
        cc=boxes["cc"],
        bcc=boxes["bcc"],
        reply_to=boxes["reply_to"],
        subject=request.subject,
        text=request.text,
        html=request.html,
        headers=tuple(request.headers.items()) + _requests(request),
        attachments=attachments,
    )


def _requests(request: SendRequest) -> tuple[tuple[str, str], ...]:
    """``track`` and ``unsubscribe`` as the request fields intake reads (and removes)."""
    fields: list[tuple[str, str]] = []
    if request.track is not None:
        if isinstance(request.track, bool):
            words = "yes" if request.track else "no"
        else:
            words = ", ".join(request.track) or "no"
        fields.append(("X-Postroom-Track", words))
    if request.unsubscribe is not None:
        fields.append(("X-Postroom-Unsubscribe", "yes" if request.unsubscribe else "no"))
    return tuple(fields)


def with_envelope(
    composed: ComposedMessage, mail_from: str | None, rcpt: Sequence[str]
) -> ComposedMessage:
    """The query's ``mail_from`` and ``rcpt``, when given, as the envelope (a bounce
    address of its own, recipients other than the header's), as for a raw message."""
    if mail_from is None and not rcpt:
        return composed
    sender = composed.sender
    if mail_from is not None:
        sender = mailbox(mail_from, path="mail_from").address
    recipients = composed.recipients
    if rcpt:
        given = [mailbox(r, path=f"rcpt[{i}]").address for i, r in enumerate(rcpt)]
        recipients = tuple({a.key: a for a in given}.values())
    smtputf8 = composed.smtputf8 or any(a.needs_smtputf8 for a in (sender, *recipients))
    return replace(
        composed,
        sender=sender,
        recipients=recipients,
        smtputf8=smtputf8,
        body_type="8BITMIME" if smtputf8 else composed.body_type,
    )
