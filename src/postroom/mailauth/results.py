"""Authentication-Results (RFC 8601): build ours, and remove forged copies of it.

Only a header carrying our authserv-id is ours to trust; one that arrives with it in
the message was written by someone else and is removed (RFC 8601 5). Headers with
other authserv-ids are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import authres
import authres.dmarc

from postroom.mail.headers import safe_header_value

__all__ = ["authentication_results", "strip_forged"]

_NAME = re.compile(rb"^authentication-results[ \t]*:", re.IGNORECASE)
_COMMENT = re.compile(rb"\([^()]*\)")


def authentication_results(
    authserv_id: str, results: Sequence[authres.core.AuthenticationResult]
) -> bytes:
    header = authres.AuthenticationResultsHeader(
        authserv_id=authserv_id, results=list(results) or [authres.NoneAuthenticationResult()]
    )
    # One clause per line (RFC 5322 2.2.3 folding), so many signatures stay readable.
    folded = safe_header_value(str(header)).replace("; ", ";\r\n ")
    return folded.encode("utf-8") + b"\r\n"


def _authserv_id(field: bytes) -> bytes:
    value = field.split(b":", 1)[1]
    value = _COMMENT.sub(b" ", value.replace(b"\r\n", b" "))
    return value.split(b";", 1)[0].strip().split(b" ", 1)[0].lower()


def strip_forged(message: bytes, authserv_id: str) -> bytes | None:
    """The message without Authentication-Results fields naming ``authserv_id`` in its
    header block; None when there are none (the common case: no copy is made)."""
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[: end + 2]
    if b"uthentication-" not in head and b"UTHENTICATION-" not in head:
        return None
    ours = authserv_id.lower().encode()
    kept: list[bytes] = []
    removed = False
    for field in _fields(head):
        if _NAME.match(field) and _authserv_id(field) == ours:
            removed = True
            continue
        kept.append(field)
    if not removed:
        return None
    return b"".join(kept) + (b"" if end < 0 else message[end + 2 :])


def _fields(head: bytes) -> list[bytes]:
    """Header fields with their continuation lines, each ending in CRLF."""
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields
