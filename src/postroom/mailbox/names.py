"""Folder names and their Maildir++ directories (the layout Dovecot and Courier use).

A folder ``Archive/2026`` lives in ``<Maildir>/.Archive.2026/`` (``/`` written as
``.``), each component in modified UTF-7 (RFC 3501 5.1.3), as Dovecot stores it.
A ``.`` inside a component is written ``&AC4-`` (modified UTF-7 for U+002E), so a
name with a dot round-trips. INBOX is the Maildir itself.
"""

from __future__ import annotations

from typing import Final

from postroom.mail.mutf7 import decode_mutf7, encode_mutf7
from postroom.mailbox.base import INBOX, SEPARATOR

__all__ = ["canonical", "decode_mutf7", "dir_name", "encode_mutf7", "folder_name"]

_MAX_NAME: Final = 200  # characters; a directory name must stay under 255 octets


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
