"""SMTP replies (RFC 5321 4.2) with enhanced status codes (RFC 3463), and the one table of them.

A ``Reply`` renders itself as wire bytes, multi-line aware (``250-...`` then ``250 ...``).
Every reply postroom sends is named here, so tests and docs can read the table
(``REPLY_TABLE``). Enhanced codes follow the IANA "SMTP Enhanced Status Codes" registry
(RFC 3463, RFC 5248): the first digit is always the class of the reply code. Replies
that carry no enhanced code by rule: the greeting and the answers to HELO/EHLO
(RFC 2034 3), 334 AUTH continuations (RFC 4954 4) and 354 (an intermediate reply).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

__all__ = [
    "ALREADY_AUTHENTICATED",
    "ALREADY_TLS",
    "AUTH_CANCELLED",
    "AUTH_CONTINUE",
    "AUTH_FAILED",
    "AUTH_MALFORMED",
    "AUTH_OK",
    "AUTH_PASSWORD",
    "AUTH_REQUIRED",
    "AUTH_SYNTAX",
    "AUTH_TEMPORARY_FAILURE",
    "AUTH_THROTTLED",
    "AUTH_TOO_WEAK",
    "AUTH_USERNAME",
    "BAD_BASE64",
    "BAD_LINE_ENDINGS",
    "BAD_RECIPIENT_SYNTAX",
    "BAD_SENDER_SYNTAX",
    "BAD_SEQUENCE",
    "BDAT_SYNTAX",
    "CLOSING",
    "DATA_SYNTAX",
    "DUPLICATE_PARAMETER",
    "ENCRYPTION_REQUIRED",
    "EXPN_NOT_AVAILABLE",
    "HELO_SYNTAX",
    "HELP",
    "INTERNAL_ERROR",
    "INVALID_CHARACTERS",
    "LINE_TOO_LONG",
    "LOCAL_ERROR",
    "MAILBOX_BUSY",
    "MAILBOX_FULL",
    "MAILBOX_NAME_NOT_ALLOWED",
    "MAIL_SYNTAX",
    "MESSAGE_TOO_BIG",
    "NEED_HELO",
    "NEED_MAIL",
    "NESTED_MAIL",
    "NON_ASCII_ADDRESS",
    "NOT_IMPLEMENTED",
    "NO_SUCH_USER",
    "NO_VALID_RECIPIENTS",
    "OK",
    "PARAMETERS_UNAVAILABLE",
    "PARAMETER_NOT_IMPLEMENTED",
    "PARAMETER_NOT_RECOGNIZED",
    "PARAMETER_SYNTAX",
    "RCPT_SYNTAX",
    "RECIPIENT_OK",
    "RELAY_DENIED",
    "REPLY_TABLE",
    "SENDER_NOT_ALLOWED",
    "SENDER_OK",
    "SHUTTING_DOWN",
    "STARTTLS_FIRST",
    "STARTTLS_SYNTAX",
    "START_DATA",
    "STORAGE_FULL",
    "SYNTAX_ERROR",
    "SYSTEM_STATUS",
    "TIMEOUT",
    "TLS_NOT_AVAILABLE",
    "TLS_READY",
    "TOO_MANY_CONNECTIONS",
    "TOO_MANY_ERRORS",
    "TOO_MANY_RECIPIENTS",
    "TRANSACTION_FAILED",
    "UNKNOWN_AUTH_MECHANISM",
    "UNKNOWN_COMMAND",
    "USER_NOT_LOCAL",
    "USER_NOT_LOCAL_WILL_FORWARD",
    "VRFY_CANNOT",
    "VRFY_SYNTAX",
    "Reply",
    "queued",
]

# Reply text is one line per element; a CR or LF inside would end the reply early and let
# client-supplied text (a HELO name, an address) forge further replies.
_LINE_BREAKS: Final = str.maketrans({"\r": " ", "\n": " "})


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    enhanced: str | None  # "x.y.z" or None (greeting, 334, and replies before EHLO may omit it)
    text: str | tuple[str, ...]
    # The wire form, made at the first to_bytes(): most replies are module constants sent
    # again and again, and rendering one cost more than parsing the command it answers.
    _wire: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def lines(self) -> tuple[str, ...]:
        return (self.text,) if isinstance(self.text, str) else self.text

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def with_text(self, text: str | tuple[str, ...]) -> Reply:
        return Reply(self.code, self.enhanced, text)

    def to_bytes(self) -> bytes:
        """RFC 5321 4.2: ``code "-" text CRLF`` for every line but the last, ``code SP text``.

        RFC 2034 3 puts the enhanced code on every line of a multi-line reply; capability
        lists (EHLO) carry none, so ``enhanced`` is None there.
        """
        wire = self._wire
        if wire is None:
            wire = self._render()
            object.__setattr__(self, "_wire", wire)  # frozen: set once, like a cached hash
        return wire

    def _render(self) -> bytes:
        lines = self.lines or ("",)
        prefix = f"{self.enhanced} " if self.enhanced else ""
        last = len(lines) - 1
        out = [
            f"{self.code}{' ' if i == last else '-'}{prefix}{line.translate(_LINE_BREAKS)}\r\n"
            for i, line in enumerate(lines)
        ]
        return "".join(out).encode("utf-8", "replace")

    def __str__(self) -> str:
        prefix = f"{self.enhanced} " if self.enhanced else ""
        return f"{self.code} {prefix}{' / '.join(self.lines)}"


def queued(queue_id: str) -> Reply:
    """The answer to a message accepted for delivery (end of DATA, BDAT LAST)."""
    return Reply(250, "2.0.0", f"Ok: queued as {queue_id}")


# -- 2xx: positive completion ----------------------------------------------------------------
SYSTEM_STATUS: Final = Reply(211, "2.0.0", "System status ok")
HELP: Final = Reply(
    214,
    "2.0.0",
    "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
)
TLS_READY: Final = Reply(220, "2.0.0", "Ready to start TLS")  # RFC 3207 4
CLOSING: Final = Reply(221, "2.0.0", "Bye")
AUTH_OK: Final = Reply(235, "2.7.0", "Authentication successful")  # RFC 4954 6
OK: Final = Reply(250, "2.0.0", "Ok")
SENDER_OK: Final = Reply(250, "2.1.0", "Sender ok")
RECIPIENT_OK: Final = Reply(250, "2.1.5", "Recipient ok")
USER_NOT_LOCAL_WILL_FORWARD: Final = Reply(251, "2.1.5", "User not local; will forward")
# RFC 5321 3.5.3: never confirm or deny a user; 252 says "send it and see".
VRFY_CANNOT: Final = Reply(
    252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery"
)

# -- 3xx: intermediate -----------------------------------------------------------------------
AUTH_CONTINUE: Final = Reply(334, None, "")  # RFC 4954 4: empty challenge (PLAIN)
AUTH_USERNAME: Final = Reply(334, None, "VXNlcm5hbWU6")  # base64("Username:"), LOGIN
AUTH_PASSWORD: Final = Reply(334, None, "UGFzc3dvcmQ6")  # base64("Password:"), LOGIN
START_DATA: Final = Reply(354, None, "End data with <CR><LF>.<CR><LF>")

# -- 4xx: transient negative -----------------------------------------------------------------
SHUTTING_DOWN: Final = Reply(421, "4.3.2", "Service shutting down")
TIMEOUT: Final = Reply(421, "4.4.2", "Timeout exceeded")
TOO_MANY_ERRORS: Final = Reply(421, "4.7.0", "Too many errors")
TOO_MANY_CONNECTIONS: Final = Reply(421, "4.7.0", "Too many connections")
# After an unforeseen fault: the command in progress got LOCAL_ERROR; the session ends.
INTERNAL_ERROR: Final = Reply(421, "4.3.0", "Local error in processing; closing connection")
MAILBOX_BUSY: Final = Reply(450, "4.2.0", "Mailbox temporarily unavailable")
LOCAL_ERROR: Final = Reply(451, "4.3.0", "Local error in processing; try again later")
TOO_MANY_RECIPIENTS: Final = Reply(452, "4.5.3", "Too many recipients")  # RFC 5321 4.5.3.1.10
STORAGE_FULL: Final = Reply(452, "4.3.1", "Insufficient system storage")
AUTH_THROTTLED: Final = Reply(454, "4.7.0", "Too many authentication failures; try again later")
AUTH_TEMPORARY_FAILURE: Final = Reply(454, "4.7.0", "Temporary authentication failure")
TLS_NOT_AVAILABLE: Final = Reply(454, "4.7.0", "TLS not available due to temporary reason")
PARAMETERS_UNAVAILABLE: Final = Reply(455, "4.5.4", "Unable to accommodate parameters")

# -- 5xx: permanent negative -----------------------------------------------------------------
UNKNOWN_COMMAND: Final = Reply(500, "5.5.2", "Command not recognized")
SYNTAX_ERROR: Final = Reply(500, "5.5.2", "Syntax error, command unrecognized")
INVALID_CHARACTERS: Final = Reply(500, "5.5.2", "Command contains invalid characters")
LINE_TOO_LONG: Final = Reply(500, "5.5.2", "Line too long")
PARAMETER_SYNTAX: Final = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
DUPLICATE_PARAMETER: Final = Reply(501, "5.5.4", "Duplicate parameter")
HELO_SYNTAX: Final = Reply(501, "5.5.4", "Syntax: EHLO hostname")
MAIL_SYNTAX: Final = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]")
RCPT_SYNTAX: Final = Reply(501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]")
DATA_SYNTAX: Final = Reply(501, "5.5.4", "Syntax: DATA")
BDAT_SYNTAX: Final = Reply(501, "5.5.4", "Syntax: BDAT size [LAST]")
VRFY_SYNTAX: Final = Reply(501, "5.5.4", "Syntax: VRFY address")
STARTTLS_SYNTAX: Final = Reply(501, "5.5.4", "Syntax: STARTTLS")
AUTH_SYNTAX: Final = Reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
BAD_SENDER_SYNTAX: Final = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT_SYNTAX: Final = Reply(501, "5.1.3", "Bad recipient address syntax")
BAD_BASE64: Final = Reply(501, "5.5.2", "Invalid base64 data")  # RFC 4954 4
AUTH_MALFORMED: Final = Reply(501, "5.5.2", "Malformed authentication response")
AUTH_CANCELLED: Final = Reply(501, "5.7.0", "Authentication cancelled")  # RFC 4954 4
NOT_IMPLEMENTED: Final = Reply(502, "5.5.1", "Command not implemented")
EXPN_NOT_AVAILABLE: Final = Reply(502, "5.5.1", "EXPN not available")  # RFC 5321 3.5.2
BAD_SEQUENCE: Final = Reply(503, "5.5.1", "Bad sequence of commands")
NEED_HELO: Final = Reply(503, "5.5.1", "Send HELO/EHLO first")
NEED_MAIL: Final = Reply(503, "5.5.1", "Need MAIL command first")
NESTED_MAIL: Final = Reply(503, "5.5.1", "Sender already specified")
ALREADY_AUTHENTICATED: Final = Reply(503, "5.5.1", "Already authenticated")
ALREADY_TLS: Final = Reply(503, "5.5.1", "TLS already active")
PARAMETER_NOT_IMPLEMENTED: Final = Reply(504, "5.5.4", "Command parameter not implemented")
UNKNOWN_AUTH_MECHANISM: Final = Reply(504, "5.5.4", "Unrecognized authentication mechanism")
AUTH_REQUIRED: Final = Reply(530, "5.7.0", "Authentication required")  # RFC 4954 6
STARTTLS_FIRST: Final = Reply(530, "5.7.0", "Must issue a STARTTLS command first")  # RFC 3207 4
AUTH_TOO_WEAK: Final = Reply(534, "5.7.9", "Authentication mechanism is too weak")
AUTH_FAILED: Final = Reply(535, "5.7.8", "Authentication credentials invalid")
ENCRYPTION_REQUIRED: Final = Reply(
    538, "5.7.11", "Encryption required for requested authentication mechanism"
)
RELAY_DENIED: Final = Reply(550, "5.7.1", "Relay access denied")
NO_SUCH_USER: Final = Reply(550, "5.1.1", "No such user here")
# RFC 5321 4.2.2 553: mailbox name not allowed (one that cannot be a mailbox of ours).
MAILBOX_NAME_NOT_ALLOWED: Final = Reply(553, "5.1.3", "Bad destination mailbox address syntax")
USER_NOT_LOCAL: Final = Reply(551, "5.1.6", "User not local")
MESSAGE_TOO_BIG: Final = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
MAILBOX_FULL: Final = Reply(552, "5.2.2", "Mailbox full")
SENDER_NOT_ALLOWED: Final = Reply(553, "5.7.1", "Sender address not allowed")
# RFC 6531 3.5: a UTF-8 address in a transaction that did not say SMTPUTF8.
NON_ASCII_ADDRESS: Final = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
NO_VALID_RECIPIENTS: Final = Reply(554, "5.5.1", "No valid recipients")  # RFC 5321 3.3
# RFC 5321 2.3.8 and 4.1.1.4: only <CRLF> ends a line; bare CR/LF is the smuggling vector.
BAD_LINE_ENDINGS: Final = Reply(554, "5.6.0", "Message contains bare <CR>, bare <LF> or NUL")
# A NUL is never queued, from any source: receivers that drop it would see other lines.
NUL_IN_MESSAGE: Final = Reply(554, "5.6.0", "Message contains NUL characters")
TRANSACTION_FAILED: Final = Reply(554, "5.0.0", "Transaction failed")
PARAMETER_NOT_RECOGNIZED: Final = Reply(
    555, "5.5.4", "MAIL FROM/RCPT TO parameter not recognized or not implemented"
)

REPLY_TABLE: Final[Mapping[str, Reply]] = MappingProxyType(
    {name: value for name, value in sorted(globals().items()) if isinstance(value, Reply)}
)
"""Every named reply, by name: for tests and documentation."""
