"""Writing IMAP responses (RFC 3501 7, 9): strings quoted when that is safe and as
literals otherwise, lists, and untagged, tagged and continuation lines.

Nothing a client or a message supplied is ever written raw: ``text`` cuts CR, LF and
other controls out of human-readable text, and ``string`` picks a literal for anything
a quoted string cannot carry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from postroom.mail.mutf7 import encode_mutf7

__all__ = [
    "astring",
    "continuation",
    "flag_list",
    "mailbox",
    "nstring",
    "number_list",
    "paren",
    "string",
    "tagged",
    "text",
    "untagged",
]

CRLF: Final = b"\r\n"
_QUOTED_MAX: Final = 256  # longer strings go as literals: cheaper to read, never escaped
_ATOM: Final = re.compile(rb"[!#$&'+-Z^-z|~]+\Z")  # ATOM-CHAR minus "\", "]", "%", "*", "{"
_QUOTABLE: Final = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*\Z")
_CONTROLS: Final = re.compile(r"[\x00-\x1f\x7f]+")


def _bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


def string(value: str | bytes, *, utf8: bool = False) -> bytes:
    """A quoted string when the value is short 7-bit text (UTF-8 too when ``utf8``),
    else a literal."""
    data = _bytes(value)
    if len(data) <= _QUOTED_MAX and (
        _QUOTABLE.match(data)
        or (
            utf8
            and b"\r" not in data
            and b"\n" not in data
            and b"\0" not in data
            and _is_utf8(data)
        )
    ):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def nstring(value: str | bytes | None, *, utf8: bool = False) -> bytes:
    return b"NIL" if value is None else string(value, utf8=utf8)


def astring(value: str | bytes) -> bytes:
    data = _bytes(value)
    if _ATOM.match(data) and data.upper() != b"NIL":
        return data
    return string(data)


def mailbox(name: str, *, utf8: bool = False) -> bytes:
    if utf8:
        return string(name, utf8=True)
    return astring(encode_mutf7(name))


def paren(items: Iterable[bytes]) -> bytes:
    return b"(" + b" ".join(items) + b")"


def flag_list(flags: Iterable[str]) -> bytes:
    return paren(flag.encode("ascii") for flag in flags)


def number_list(numbers: Iterable[int]) -> bytes:
    """``1:3,7`` for ascending numbers (UIDPLUS, ESEARCH)."""
    out: list[str] = []
    run_start: int | None = None
    previous = 0
    for number in numbers:
        if run_start is not None and number == previous + 1:
            previous = number
            continue
        if run_start is not None:
            out.append(str(run_start) if run_start == previous else f"{run_start}:{previous}")
        run_start = previous = number
    if run_start is not None:
        out.append(str(run_start) if run_start == previous else f"{run_start}:{previous}")
    return ",".join(out).encode("ascii")


def text(value: str) -> bytes:
    """Human-readable text for the end of a response line: one line, no controls."""
    return _CONTROLS.sub(" ", value).strip()[:200].encode("utf-8", "replace") or b"done"


def untagged(*parts: bytes) -> bytes:
    return b"* " + b" ".join(parts) + CRLF


def tagged(tag: str, status: str, message: str, *, code: str | None = None) -> bytes:
    prefix = f"[{code}] " if code else ""
    return (
        tag.encode("ascii")
        + b" "
        + status.encode("ascii")
        + b" "
        + prefix.encode("utf-8")
        + text(message)
        + CRLF
    )


def status(kind: str, message: str, *, code: str | None = None) -> bytes:
    """An untagged OK/NO/BAD/BYE line."""
    prefix = f"[{code}] " if code else ""
    return untagged(kind.encode("ascii"), prefix.encode("utf-8") + text(message))


def continuation(message: str = "") -> bytes:
    return b"+ " + (text(message) if message else b"") + CRLF
