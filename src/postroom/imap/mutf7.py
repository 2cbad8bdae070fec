"""Mailbox names on the wire: modified UTF-7 (RFC 3501 5.1.3), unless the client enabled
UTF8=ACCEPT (RFC 6855), when they are UTF-8 as they are."""

from __future__ import annotations

import base64
import re
from typing import Final

__all__ = ["decode", "encode"]

_SHIFTED: Final = re.compile(r"&([^-]*)-")


def encode(name: str) -> str:
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            raw = "".join(run).encode("utf-16-be", "surrogatepass")
            out.append(
                "&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-"
            )
            run.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    flush()
    return "".join(out)


def decode(name: str) -> str:
    """The name a client sent; ``ValueError`` for broken modified UTF-7."""
    if any(ord(char) > 0x7E for char in name):
        raise ValueError("8-bit mailbox name without UTF8=ACCEPT")

    def shifted(match: re.Match[str]) -> str:
        body = match.group(1)
        if not body:
            return "&"
        padded = body.replace(",", "/") + "=" * (-len(body) % 4)
        try:
            raw = base64.b64decode(padded, validate=True)
            return raw.decode("utf-16-be")
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError("bad modified UTF-7 in mailbox name") from error

    decoded = _SHIFTED.sub(shifted, name)
    if "&" in _SHIFTED.sub("", name):
        raise ValueError("unterminated & in mailbox name")
    return decoded
