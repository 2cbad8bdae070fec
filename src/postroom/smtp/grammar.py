"""SMTP command grammar (RFC 5321 4.1, RFC 6531 3.3) as compiled regexes and small parsers.

Nothing here raises for bad input from the peer except ``AddressError`` from the path
parsers; the other functions return ``None`` when the text does not parse, and the
caller picks the reply.
"""

from __future__ import annotations

import re
from typing import Final

from postroom.errors import AddressError
from postroom.mail.address import Address, parse_address, parse_domain

__all__ = [
    "decode_line",
    "parse_bdat_argument",
    "parse_forward_path",
    "parse_helo_argument",
    "parse_params",
    "parse_reverse_path",
    "split_command",
    "split_path_argument",
    "xtext_decode",
    "xtext_encode",
]

# RFC 5321 4.1.1: a verb is letters only; anything else is an unknown command.
_VERB: Final = re.compile(r"[A-Za-z]+")
# The <...> path. A quoted local part may hold ">" (qtextSMTP includes it) and "\" pairs.
_PATH: Final = re.compile(r'<((?:"(?:[^"\\]|\\.)*"|[^<>"\s])*)>')
# RFC 5321 4.1.2 A-d-l: a source route "@one,@two:" before the mailbox; accepted and ignored
# (RFC 5321 4.1.2 and Appendix C: "MUST accept" but "SHOULD ignore").
_ROUTE: Final = re.compile(r"@([^,:@]+)(?:,@([^,:@]+))*:")
_ROUTE_DOMAIN: Final = re.compile(r"@([^,:@]+)")
# RFC 5321 4.1.2 esmtp-keyword and esmtp-value; RFC 6531 3.3 adds UTF-8 to the value.
_PARAM: Final = re.compile(
    r"([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+))?"
)
# RFC 3461 4: xtext = *( xchar / hexchar ); xchar is "!".."~" but "+" and "=".
_XTEXT: Final = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-Fa-f]{2})*")
_HEXCHAR: Final = re.compile(r"\+([0-9A-Fa-f]{2})")
_POSTMASTER: Final = "postmaster"
_MAX_DOMAIN: Final = 255
_SIZE_DIGITS: Final = 20  # as RFC 1870 SIZE; RFC 3030 chunk-size is 1*DIGIT


def decode_line(raw: bytes) -> str | None:
    """A command line as text: UTF-8 (RFC 6531 3.3), no NUL or other C0 control but TAB."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.isprintable() and any((ord(c) < 0x20 and c != "\t") or c == "\x7f" for c in text):
        return None
    return text


def split_command(line: str) -> tuple[str, str] | None:
    """``(VERB, argument)``; the verb uppercased. None when the verb is not letters."""
    verb, _, argument = line.strip(" \t").partition(" ")
    if not _VERB.fullmatch(verb):
        return None
    return verb.upper(), argument.strip(" \t")


def parse_helo_argument(argument: str) -> str | None:
    """HELO/EHLO's Domain or address-literal, taken as one word and not judged further:
    clients send all kinds of names and RFC 5321 4.1.4 says not to refuse them for it."""
    if not argument or len(argument) > _MAX_DOMAIN or any(c in argument for c in " \t"):
        return None
    return argument


def parse_bdat_argument(argument: str) -> tuple[int, bool] | None:
    """RFC 3030 2: ``chunk-size [SP "LAST"]`` -> ``(size, last)``."""
    words = argument.split()
    if not 1 <= len(words) <= 2 or (len(words) == 2 and words[1].upper() != "LAST"):
        return None
    size = words[0]
    if not (size.isascii() and size.isdigit() and len(size) <= _SIZE_DIGITS):
        return None
    return int(size), len(words) == 2


def split_path_argument(argument: str, keyword: str) -> tuple[str, str] | None:
    """``FROM:<path> params`` -> ``(path inside the brackets, params)``.

    Liberal where clients commonly are: the keyword in any case, spaces after the colon.
    """
    head, colon, rest = argument.partition(":")
    if not colon or head.strip(" ").upper() != keyword:
        return None
    rest = rest.lstrip(" ")
    match = _PATH.match(rest)
    if match is None:
        return None
    params = rest[match.end() :]
    if params and not params.startswith(" "):
        return None
    return match.group(1), params.strip(" ")


def _strip_route(path: str) -> str:
    match = _ROUTE.match(path)
    if match is None:
        return path
    for domain in _ROUTE_DOMAIN.findall(match.group(0)):
        parse_domain(domain)
    return path[match.end() :]


def parse_reverse_path(path: str) -> Address | None:
    """MAIL FROM's path: None for the null reverse-path ``<>`` (RFC 5321 4.5.5)."""
    if path == "":
        return None
    return parse_address(_strip_route(path))


def parse_forward_path(path: str, hostname: str) -> Address:
    """RCPT TO's path. ``<Postmaster>`` without a domain is ours (RFC 5321 4.1.1.3)."""
    mailbox = _strip_route(path)
    if mailbox.lower() == _POSTMASTER:
        return Address(_POSTMASTER, hostname.lower())
    if not mailbox:
        raise AddressError("empty forward-path")
    return parse_address(mailbox)


def parse_params(text: str) -> list[tuple[str, str | None]] | None:
    """``KEY[=value] ...`` -> ``[(KEY, value)]`` with keywords uppercased; None if malformed."""
    out: list[tuple[str, str | None]] = []
    for word in text.split():
        match = _PARAM.fullmatch(word)
        if match is None:
            return None
        out.append((match.group(1).upper(), match.group(2)))
    return out


def xtext_decode(text: str) -> str | None:
    """RFC 3461 4 xtext -> text (UTF-8 octets); None when it is not valid xtext."""
    if not _XTEXT.fullmatch(text):
        return None
    raw = _HEXCHAR.sub(lambda m: chr(int(m.group(1), 16)), text).encode("latin-1")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def xtext_encode(text: str) -> str:
    """Text -> RFC 3461 4 xtext: "+", "=", controls, space and non-ASCII as ``+XX``."""
    return "".join(
        chr(b) if 0x21 <= b <= 0x7E and b not in (0x2B, 0x3D) else f"+{b:02X}"
        for b in text.encode("utf-8")
    )
