"""Trace and origin headers that postroom writes: Received: (RFC 5321 4.4), Date, Message-ID.

Header values are written with CRLF and folded with a tab; anything that could break a
header line (CR, LF) is removed from the values first.
"""

from __future__ import annotations

import email.utils
import functools
import math
import re
from datetime import UTC, datetime

from postroom.mail.envelope import Source

__all__ = ["date_header", "received_header", "safe_header_value"]

_UNSAFE = re.compile(r"[\r\n\x00]")
# Characters that may stand in a Received: clause's words (RFC 5321 4.4 Domain / TCP-info).
_WORD_UNSAFE = re.compile(r"[^\x21-\x7e\u0080-\U0010ffff]")


def safe_header_value(value: str) -> str:
    return _UNSAFE.sub("", value)


def _word(value: str) -> str:
    """A client-given word (HELO name): no spaces, no parentheses that would break comments."""
    return _WORD_UNSAFE.sub("", value).replace("(", "").replace(")", "")[:255] or "unknown"


def date_header(now: float) -> str:
    """RFC 5322 3.3 date-time, in UTC; it counts whole seconds, so one per second is made."""
    return _date_of_second(math.floor(now))


@functools.lru_cache(maxsize=8)
def _date_of_second(second: int) -> str:
    return email.utils.format_datetime(datetime.fromtimestamp(second, UTC))


def received_header(
    *,
    source: Source,
    hostname: str,
    queue_id: str,
    now: float,
    for_recipient: str | None = None,
) -> bytes:
    """``Received:`` in the RFC 5321 4.4 form, with the TLS facts as a comment and the AUTH
    fact in the protocol (RFC 3848 ESMTPSA). The AUTH user's name is not disclosed."""
    parts = []
    if source.helo is not None or source.client_ip is not None:
        tcp_info = f"[{source.client_ip}]" if source.client_ip else "unknown"
        if source.reverse_dns:
            tcp_info = f"{_word(source.reverse_dns)} {tcp_info}"
        parts.append(f"from {_word(source.helo or 'unknown')} ({tcp_info})")
    parts.append(f"by {hostname} (postroom)")
    with_clause = f"with {source.protocol or 'local'} id {queue_id}"
    if source.tls:
        with_clause = f"{with_clause}\r\n\t(using {safe_header_value(source.tls)})"
    parts.append(with_clause)
    if for_recipient is not None:
        parts.append(f"for <{safe_header_value(for_recipient)}>")
    value = "\r\n\t".join(parts)
    return f"Received: {value};\r\n\t{date_header(now)}\r\n".encode()
