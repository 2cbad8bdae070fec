"""Request JSON -> a ComposeRequest, and pydantic's errors -> 422 field paths."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from postroom.api.errors import ApiError
from postroom.api.schemas import AddressIn, AttachmentIn, SendRequest
from postroom.intake.compose import (
    Attachment,
    ComposeError,
    ComposeRequest,
    Mailbox,
    mailbox,
    parse_mailbox,
)

__all__ = ["compose_request", "field_path", "parse_send", "validation_fields"]

_ADDRESS_FIELDS = frozenset({"from", "to", "cc", "bcc", "reply_to"})
_ADDRESS_HINT = "must be an address: a string or an object with email and name"


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
    return isinstance(part, str) and (part in ("str", "AddressIn") or part.startswith("list["))


def validation_fields(errors: Sequence[ErrorDetails]) -> list[tuple[str, str]]:
    """One message per field path, in order; union attempts folded into one."""
    found: dict[str, str] = {}
    for error in errors:
        loc = [p for p in error["loc"] if not _is_union_tag(p)]
        path = field_path(loc)
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif loc and loc[0] in _ADDRESS_FIELDS and error["type"] in ("string_type", "model_type"):
            message = _ADDRESS_HINT
        else:
            message = error["msg"]
        found.setdefault(path, message)
    # A union reports each member it tried; the deepest paths say what is really wrong.
    return [
        (path, message)
        for path, message in found.items()
        if not any(other.startswith((f"{path}[", f"{path}.")) for other in found)
    ]


def parse_send(data: Any) -> SendRequest:
    try:
        return SendRequest.model_validate(data)
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
        headers=tuple(request.headers.items()),
        attachments=attachments,
    )
