"""Folder names and their Maildir++ directories (the layout Dovecot and Courier use).

A folder ``Archive/2026`` lives in ``<Maildir>/.Archive.2026/`` (``/`` written as
``.``), each component in modified UTF-7 (RFC 3501 5.1.3), as Dovecot stores it.
A ``.`` inside a component is written ``&AC4-`` (modified UTF-7 for U+002E), so a
name with a dot round-trips. INBOX is the Maildir itself.
"""

from __future__ import annotations

import base64
from typing import Final

from postroom.mailbox.base import INBOX, SEPARATOR

__all__ = ["canonical", "decode_mutf7", "dir_name", "encode_mutf7", "folder_name"]

_MAX_NAME: Final = 200  # characters; a directory name must stay under 255 octets


def _b64(text: str) -> str:
    raw = text.encode("utf-16-be")
    return base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")


def encode_mutf7(text: str, *, also: str = "") -> str:
    """``text`` in modified UTF-7; characters in ``also`` are encoded too."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            out.append("&" + _b64("".join(pending)) + "-")
            pending.clear()

    for char in text:
        if 0x20 <= ord(char) <= 0x7E and char not in also:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def decode_mutf7(text: str) -> str:
    """``text`` from modified UTF-7; ``ValueError`` when it is not valid."""
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char != "&":
            out.append(char)
            index += 1
            continue
        end = text.find("-", index)
        if end < 0:
            raise ValueError(f"unterminated shift in {text!r}")
        chunk = text[index + 1 : end]
        if not chunk:
            out.append("&")
        else:
            padded = chunk.replace(",", "/") + "=" * (-len(chunk) % 4)
            try:
                out.append(base64.b64decode(padded, validate=True).decode("utf-16-be"))
            except ValueError as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors
                raise ValueError(f"bad modified UTF-7 in {text!r}") from exc
        index = end + 1
    return "".join(out)


def canonical(name: str) -> str:
    """``name`` as the store spells it (INBOX in capitals); ``ValueError`` when it
    cannot name a folder (empty components, control characters, too long)."""
    if not name or len(name) > _MAX_NAME:
        raise ValueError(f"{name!r} cannot name a folder")
    parts = name.split(SEPARATOR)
    if any(not part or part != part.strip() for part in parts):
        raise ValueError(f"{name!r} cannot name a folder: an empty or padded part")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        raise ValueError(f"{name!r} cannot name a folder: control characters")
    if parts[0].upper() == INBOX:
        parts[0] = INBOX
    return SEPARATOR.join(parts)


def dir_name(name: str) -> str:
    """The directory (under the Maildir) of the folder ``name``; "" for INBOX."""
    name = canonical(name)
    if name == INBOX:
        return ""
    return "." + ".".join(encode_mutf7(part, also=".") for part in name.split(SEPARATOR))


def folder_name(directory: str) -> str | None:
    """The folder a Maildir++ directory (``.Sent``) holds; None when it names none."""
    if not directory.startswith(".") or directory in (".", ".."):
        return None
    try:
        parts = [decode_mutf7(part) for part in directory[1:].split(".")]
        return canonical(SEPARATOR.join(parts))
    except ValueError:
        return None
