"""A message's DKIM signatures in a word, for the delivery log and the dashboard: reads
the header with dkimpy alone, so that the processes that log deliveries never load
cryptography for it (``dkimsign`` does, to sign)."""

from __future__ import annotations

import dkim
import dkim.util

__all__ = ["signature_summary"]


def signature_summary(message: bytes) -> str:
    """The DKIM-Signature fields at the top of the header block, for the log:
    ``"rsa-sha256 s=sel d=example.com, ..."``, or ``"none"``."""
    end = message.find(b"\r\n\r\n")
    head = message[: end + 2] if end >= 0 else message
    if b"DKIM-Signature:" not in head:
        return "none"
    try:
        fields = dkim.rfc822_parse(head + b"\r\n")[0]
    except (dkim.MessageFormatError, IndexError):  # a log line must not fail a delivery
        return "unreadable"
    found = []
    for name, value in fields:
        if name.lower() == b"dkim-signature":
            try:
                tags = dict(dkim.util.parse_tag_value(value))
            except dkim.util.InvalidTagValueList:
                continue
            found.append(
                " ".join(
                    [tags.get(b"a", b"?").decode(errors="replace")]
                    + [
                        f"{t.decode()}={tags.get(t, b'').decode(errors='replace')}"
                        for t in (b"s", b"d")
                    ]
                )
            )
    return ", ".join(found) or "none"
