"""Modified UTF-7 (RFC 3501 5.1.3): how IMAP names mailboxes on the wire, and how
Maildir++ (Dovecot, Courier) names folder directories on disk."""

from __future__ import annotations

import base64

__all__ = ["decode_mutf7", "encode_mutf7"]


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
