"""Authentication-Results (RFC 8601): build ours, and read the authserv-id of one.

Only a header carrying our authserv-id is ours to trust; one that arrives with it in
the message was written by someone else and is removed (RFC 8601 5) by intake's
clean-up, for mail of every source. Headers with other authserv-ids are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import authres
import authres.dmarc

from postroom.mail.headers import safe_header_value

__all__ = ["authentication_results", "authserv_id_of"]

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


def authserv_id_of(field: bytes) -> bytes:
    """The authserv-id an ``Authentication-Results`` field names (lower case, comments
    and folding removed); intake's clean-up removes those that name ours."""
    value = field.split(b":", 1)[1]
    value = _COMMENT.sub(b" ", value.replace(b"\r\n", b" "))
    return value.split(b";", 1)[0].strip().split(b" ", 1)[0].lower()
