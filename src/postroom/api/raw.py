"""A raw RFC 5322 message (``message/rfc822``) from its spool to intake, without holding
it whole: only the header block is read (``prepare_raw``: the envelope, the subject and
the authors); intake's clean-up then reads the spool chunk by chunk as for any door."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from postroom.api.body import SpooledRequest
from postroom.intake.cleanup import header_fields
from postroom.intake.compose import ComposedMessage, ComposeError, prepare_raw

__all__ = ["MAX_HEADER_BLOCK", "raw_message"]

MAX_HEADER_BLOCK = 1024 * 1024  # a header block that does not end within this is refused


def raw_message(
    received: SpooledRequest, *, mail_from: str | None, rcpt: Sequence[str]
) -> ComposedMessage:
    """The message's envelope and facts (its bytes stay in the spool); ComposeError for
    what cannot be sent."""
    spooled = received.body
    first = b""
    for chunk in spooled.iter_chunks(64 * 1024):
        first += chunk
        if len(first) >= MAX_HEADER_BLOCK:
            break
    _, offset, ended = header_fields(first)
    rest = first[offset:]
    if not ended and spooled.size > len(first) and b"\n" not in rest and b"\r" not in rest:
        # Cut off inside the header block: a field past here (a second From) would go unread.
        raise ComposeError([("body", f"the header block is larger than {MAX_HEADER_BLOCK} bytes")])
    composed = prepare_raw(first, mail_from=mail_from, rcpt=rcpt)
    return replace(composed, data=b"", body_type="7BIT" if received.ascii else "8BITMIME")
