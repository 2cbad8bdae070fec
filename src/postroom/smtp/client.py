"""The sans-IO half of the outbound SMTP client: replies in, bytes out.

``ReplyParser`` turns whatever the server sends, split anywhere, into ``Reply`` values in
order, multi-line replies joined (RFC 5321 4.2.1). It keeps every whole reply it has
seen, so the replies to a pipelined batch (RFC 2920 3.1) may arrive together, early or
one byte at a time; none is ever dropped. The writers (``command``, ``mail_from``,
``rcpt_to``, ``auth_plain``, ``message_data``) return the bytes to send; ``message_data``
dot-stuffs a whole message in one pass (RFC 5321 4.5.2). ``Capabilities`` reads an EHLO
reply (RFC 5321 4.1.1.1). ``mail_parameters`` and ``rcpt_parameters`` say what goes on
MAIL FROM and RCPT TO for one message at one peer, and ``local_refusal`` when not to send
it there at all.

Enhanced status codes (RFC 3463) are taken from a reply's text whenever it starts with
one, whether or not the server announced ENHANCEDSTATUSCODES (RFC 2034): greetings come
before EHLO, and many servers send them unannounced. Their class is made to match the
reply code; a 2xx, 4xx or 5xx reply without one gets ``X.0.0``.

Nothing here awaits, logs or touches a socket. Bytes that are not SMTP replies raise
``ReplyError`` from ``next_reply``, after the good replies that came before them.
"""

from __future__ import annotations

import base64
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Protocol

from postroom.errors import PostroomError
from postroom.smtp.grammar import xtext_encode
from postroom.smtp.replies import Reply

__all__ = [
    "DATA",
    "END_OF_DATA",
    "HELO_CAPABILITIES",
    "QUIT",
    "RSET",
    "STARTTLS",
    "Capabilities",
    "Message",
    "Recipient",
    "ReplyError",
    "ReplyParser",
    "auth_plain",
    "base64_line",
    "bdat_last",
    "command",
    "local_refusal",
    "mail_from",
    "mail_parameters",
    "message_data",
    "rcpt_parameters",
    "rcpt_to",
    "reply_from_lines",
]

# RFC 5321 4.5.3.1.5 allows 512 octets per reply line; real servers go beyond it (long
# rejection texts), so the limits are generous and only stop a peer that never ends.
MAX_LINE: Final = 8192
MAX_LINES: Final = 1000

_ENHANCED: Final = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:[ \t]+|$)")
# RFC 5321 4.1.1.1: ehlo-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
_KEYWORD: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
# A CR or LF inside a command would end it early and smuggle another (command injection).
_LINE_BREAK: Final = re.compile(r"[\r\n\x00]")
_CODE_FIRST: Final = frozenset(b"2345")
_DIGITS: Final = frozenset(b"0123456789")
_LAST, _MORE = 0x20, 0x2D  # " " ends a reply, "-" continues it


class ReplyError(PostroomError, ValueError):
    """What the server sent is not an SMTP reply; the session cannot go on."""


def reply_from_lines(code: int, lines: Sequence[str]) -> Reply:
    """The reply text lines (without code and separator) -> ``Reply``, enhanced code split off."""
    enhanced = None
    if lines and (match := _ENHANCED.match(lines[0])):
        enhanced = f"{code // 100}.{match.group(2)}.{match.group(3)}"
        first = lines[0][match.end() :]
        lines = [first, *(_strip_enhanced(line) for line in lines[1:])]
    elif code // 100 in (2, 4, 5):
        enhanced = f"{code // 100}.0.0"
    if not lines:
        lines = [""]
    return Reply(code, enhanced, lines[0] if len(lines) == 1 else tuple(lines))


def _strip_enhanced(line: str) -> str:
    """RFC 2034 3: each line of a multi-line reply carries the code again."""
    match = _ENHANCED.match(line)
    return line[match.end() :] if match else line


class ReplyParser:
    """Incremental reply framing over one ``bytearray`` (the receiver's buffer shape)."""

    __slots__ = ("_buffer", "_code", "_error", "_lines", "_ready", "_searched")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._searched = 0  # no LF before this offset
        self._code: int | None = None  # of the multi-line reply being read
        self._lines: list[str] = []
        self._ready: deque[Reply] = deque()
        self._error: ReplyError | None = None

    @property
    def pending(self) -> bool:
        """Bytes are held that are not a whole reply yet, or whole replies not taken."""
        return bool(self._buffer or self._lines or self._ready)

    @property
    def failed(self) -> bool:
        return self._error is not None

    def feed(self, data: bytes) -> None:
        if self._error is not None:
            return  # the stream is broken; nothing after the fault can be trusted
        self._buffer += data
        try:
            self._frame()
        except ReplyError as exc:
            self._error = exc
            self._buffer.clear()

    def next_reply(self) -> Reply | None:
        """The next whole reply, or None when more bytes are needed."""
        if self._ready:
            return self._ready.popleft()
        if self._error is not None:
            raise self._error
        return None

    def _frame(self) -> None:
        buffer, start = self._buffer, 0
        while (end := buffer.find(b"\n", max(start, self._searched))) >= 0:
            if end - start > MAX_LINE:
                raise ReplyError("reply line too long")
            self._line(bytes(buffer[start : end - 1 if buffer[end - 1 : end] == b"\r" else end]))
            start = end + 1
        if start:
            del buffer[:start]
        self._searched = len(buffer)
        if len(buffer) > MAX_LINE:
            raise ReplyError("reply line too long")

    def _line(self, line: bytes) -> None:
        """RFC 5321 4.2: ``Reply-code "-" text`` for every line but the last,
        ``Reply-code [SP text]`` for the last; all with the same code."""
        if (
            len(line) < 3
            or line[0] not in _CODE_FIRST
            or line[1] not in _DIGITS
            or line[2] not in _DIGITS
            or (len(line) > 3 and line[3] not in (_LAST, _MORE))
        ):
            raise ReplyError(f"not an SMTP reply line: {line[:80]!r}")
        code = int(line[:3])
        if self._code is not None and code != self._code:
            raise ReplyError(f"reply code changed from {self._code} to {code} within a reply")
        self._lines.append(line[4:].decode("utf-8", "replace"))
        if len(line) > 3 and line[3] == _MORE:
            if len(self._lines) >= MAX_LINES:
                raise ReplyError("reply has too many lines")
            self._code = code
            return
        self._ready.append(reply_from_lines(code, self._lines))
        self._code, self._lines = None, []


@dataclass(frozen=True, slots=True, eq=False)
class Capabilities:
    """What the server said it supports: EHLO keywords (lower case) -> their parameters."""

    extensions: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    esmtp: bool = True  # False after a HELO: no extensions at all

    @classmethod
    def from_ehlo(cls, reply: Reply) -> Capabilities:
        """The first line names the server; each other line is ``keyword [params]``."""
        found: dict[str, str] = {}
        for line in reply.lines[1:]:
            keyword, _, params = line.strip().partition(" ")
            if keyword.upper().startswith("AUTH="):  # pre-RFC 4954 servers: "AUTH=LOGIN"
                keyword, params = "AUTH", f"{keyword[5:]} {params}"
            if not _KEYWORD.fullmatch(keyword):
                continue
            key = keyword.lower()
            params = params.strip()
            found[key] = f"{found[key]} {params}".strip() if key in found else params
        return cls(MappingProxyType(found))

    @property
    def size(self) -> int | None:
        """RFC 1870: the largest message the server takes; None when it names no limit."""
        value = self.extensions.get("size", "").strip()
        return int(value) if value.isdigit() and int(value) > 0 else None

    @property
    def auth(self) -> frozenset[str]:
        """RFC 4954: the SASL mechanisms offered, upper case."""
        return frozenset(self.extensions.get("auth", "").upper().split())

    @property
    def pipelining(self) -> bool:
        return "pipelining" in self.extensions

    @property
    def starttls(self) -> bool:
        return "starttls" in self.extensions

    @property
    def chunking(self) -> bool:
        """RFC 3030: BDAT may carry the message instead of DATA."""
        return "chunking" in self.extensions


HELO_CAPABILITIES: Final = Capabilities(esmtp=False)


def command(verb: str, *arguments: str) -> bytes:
    """One command line. Raises ``ValueError`` for a CR, LF or NUL in any argument."""
    line = " ".join((verb, *arguments))
    if _LINE_BREAK.search(line):
        raise ValueError(f"line break or NUL in an SMTP command: {line[:80]!r}")
    return line.encode("utf-8") + b"\r\n"  # UTF-8 only in SMTPUTF8 transactions (RFC 6531)


def mail_from(sender: str, parameters: Iterable[str] = ()) -> bytes:
    return command("MAIL", f"FROM:<{sender}>", *parameters)


def rcpt_to(recipient: str, parameters: Iterable[str] = ()) -> bytes:
    return command("RCPT", f"TO:<{recipient}>", *parameters)


RSET: Final = command("RSET")
DATA: Final = command("DATA")
QUIT: Final = command("QUIT")
STARTTLS: Final = command("STARTTLS")
END_OF_DATA: Final = b".\r\n"


def bdat_last(size: int) -> bytes:
    """RFC 3030 2: the command for a whole message in one chunk; its octets follow as they
    are, neither dot-stuffed nor ended by a dot."""
    return command("BDAT", str(size), "LAST")


def base64_line(text: str) -> bytes:
    """A SASL response line (RFC 4954 4): base64 of the UTF-8 text."""
    return base64.b64encode(text.encode("utf-8")) + b"\r\n"


def auth_plain(username: str, password: str) -> bytes:
    """``AUTH PLAIN`` with its initial response (RFC 4616: NUL authcid NUL passwd)."""
    token = base64.b64encode(f"\0{username}\0{password}".encode())
    return b"AUTH PLAIN " + token + b"\r\n"


_BARE_LINE_END: Final = re.compile(rb"\r\n|\r|\n")


def message_data(data: bytes) -> bytes:
    """The message as sent after 354: dot-stuffed, ending in ``CRLF . CRLF``.

    RFC 5321 4.5.2: a line that starts with "." gets another one. A bare CR or LF is made
    a CRLF first: a receiver that took a bare LF for a line end could otherwise find an
    end of data we did not mean (SMTP smuggling), and RFC 5321 2.3.8 forbids them anyway.
    """
    crlf = data.count(b"\r\n")
    if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
        data = _BARE_LINE_END.sub(b"\r\n", data)
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if stuffed and not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + END_OF_DATA


class Message(Protocol):
    """What the client needs to know of a message (the queue's message fits as it is)."""

    @property
    def sender(self) -> str: ...  # "" is the null reverse-path
    @property
    def data(self) -> bytes: ...  # CRLF line endings, not dot-stuffed
    @property
    def smtputf8(self) -> bool: ...
    @property
    def body_type(self) -> str: ...  # 7BIT or 8BITMIME
    @property
    def ret(self) -> str | None: ...  # RFC 3461 RET: FULL or HDRS
    @property
    def envid(self) -> str | None: ...  # RFC 3461 ENVID, xtext-decoded


class Recipient(Protocol):
    @property
    def address(self) -> str: ...
    @property
    def notify(self) -> str | None: ...  # RFC 3461 NOTIFY as given (comma-separated)
    @property
    def orcpt(self) -> str | None: ...  # RFC 3461 ORCPT ("rfc822;addr")


def mail_parameters(message: Message, extensions: Mapping[str, str]) -> list[str]:
    """Only what the peer announced: SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8
    (RFC 6531), RET and ENVID (RFC 3461)."""
    params = []
    if "size" in extensions:
        params.append(f"SIZE={len(message.data)}")
    if message.body_type.upper() == "8BITMIME" and "8bitmime" in extensions:
        params.append("BODY=8BITMIME")
    if message.smtputf8 and "smtputf8" in extensions:
        params.append("SMTPUTF8")
    if "dsn" in extensions:
        if message.ret:
            params.append(f"RET={message.ret.upper()}")
        if message.envid:
            params.append(f"ENVID={xtext_encode(message.envid)}")
    return params


def rcpt_parameters(recipient: Recipient, extensions: Mapping[str, str]) -> list[str]:
    """NOTIFY and ORCPT (RFC 3461) when the peer offers DSN."""
    if "dsn" not in extensions:
        return []  # RFC 3461 4.2 "relayed" DSNs are the caller's business
    params = []
    if recipient.notify:
        params.append(f"NOTIFY={recipient.notify.upper().replace(' ', '')}")
    if recipient.orcpt:
        kind, _, address = recipient.orcpt.partition(";")
        # Stored xtext-decoded, except utf-8-addr-xtext which is kept as given (RFC 6533).
        value = address if kind.lower() == "utf-8" else xtext_encode(address)
        params.append(f"ORCPT={kind};{value}")
    return params


def local_refusal(message: Message, extensions: Mapping[str, str], where: str) -> Reply | None:
    """The reply the peer would give to a message it cannot take: over its SIZE (RFC 1870),
    or needing SMTPUTF8 it does not offer (RFC 6531 3.4); None when it can."""
    limit = extensions.get("size", "").strip()
    if limit.isdigit() and 0 < int(limit) < len(message.data):
        text = f"Message size ({len(message.data)} bytes) exceeds the limit of {where} ({limit})"
        return Reply(552, "5.3.4", text)
    if message.smtputf8 and "smtputf8" not in extensions:
        return Reply(550, "5.6.7", f"SMTPUTF8 is required, but was not offered by {where}")
    return None
