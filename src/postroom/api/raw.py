"""A raw RFC 5322 message (``message/rfc822``) from its spool to what intake takes,
without holding it whole: only the header block is parsed (``prepare_raw``: Bcc out,
Message-ID and Date in when missing); the body is copied after it chunk by chunk."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace

from postroom.api.body import SpooledRequest
from postroom.intake.compose import ComposedMessage, ComposeError, prepare_raw
from postroom.mail.spool import SpooledBody

__all__ = ["MAX_HEADER_BLOCK", "raw_message"]

MAX_HEADER_BLOCK = 1024 * 1024  # a header block larger than this is refused
_HEADER_END = re.compile(rb"\r\n\r\n|^\r\n")


def raw_message(
    received: SpooledRequest,
    *,
    hostname: str,
    now: float,
    mail_from: str | None,
    rcpt: Sequence[str],
    new_spool: Callable[[], SpooledBody],
) -> tuple[ComposedMessage, SpooledBody]:
    """The message's envelope and facts, and the message itself in a new spool (the
    caller closes it). ComposeError for what cannot be sent."""
    spooled = received.body
    first = b""
    for chunk in spooled.iter_chunks(64 * 1024):
        first += chunk
        if len(first) >= MAX_HEADER_BLOCK or _HEADER_END.search(first):
            break
    end = _HEADER_END.search(first[:MAX_HEADER_BLOCK])
    if end is None and spooled.size > MAX_HEADER_BLOCK:
        raise ComposeError([("body", f"the header block is larger than {MAX_HEADER_BLOCK} bytes")])
    head = first[: end.end()] if end is not None else first
    composed = prepare_raw(head, hostname=hostname, now=now, mail_from=mail_from, rcpt=rcpt)
    message = new_spool()
    message.write(composed.data)  # the header block as prepared
    for chunk in spooled.iter_chunks(start=len(head)):
        message.write(chunk)
    body_type = "7BIT" if received.ascii else "8BITMIME"
    return replace(composed, data=b"", body_type=body_type), message
