"""Mailbox addresses as RFC 5321 4.1.2 (and RFC 6531 for UTF-8) defines them.

An ``Address`` is a parsed ``Local-part@Domain``. The domain is kept lowercased
in its Unicode form; ``ascii_domain`` gives the IDNA A-label form for DNS and
for comparing with configured domains. The null reverse-path ``<>`` is not an
Address: the envelope's sender is ``None`` then.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

from postroom.errors import AddressError

__all__ = [
    "Address",
    "address_key",
    "mailbox_problem",
    "parse_address",
    "parse_domain",
    "path_name_problem",
]

# RFC 5321 4.5.3.1: local part 64 octets, domain 255 octets, path 256 octets.
MAX_LOCAL = 64
MAX_DOMAIN = 255
MAX_PATH = 256

# atext (RFC 5322 3.2.3) plus any non-ASCII character (RFC 6531 3.3 UTF8-non-ascii).
_ATOM = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]+"
_DOT_STRING = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
# qtextSMTP and quoted-pairSMTP (RFC 5321 4.1.2).
_QUOTED_STRING = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"')
# What one path component must not hold: a separator, NUL or another control character.
_UNSAFE_IN_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")
_LDH = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?")
_LABEL = re.compile(
    r"(?:[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\-\u0080-\U0010ffff]*[A-Za-z0-9\u0080-\U0010ffff])?)"
)


@dataclass(frozen=True, slots=True)
class Address:
    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def ascii_domain(self) -> str:
        return to_ascii_domain(self.domain)

    @property
    def needs_smtputf8(self) -> bool:
        """True when the local part is not ASCII (a U-label domain can be sent as A-labels)."""
        return not self.local.isascii()

    @property
    def key(self) -> str:
        """The form used to look the address up: local part as given, domain as A-labels."""
        return f"{self.local.lower()}@{self.ascii_domain}"


def to_ascii_domain(domain: str) -> str:
    if domain.isascii() or domain.startswith("["):
        return domain.lower()
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise AddressError(f"domain {domain!r} is not a valid IDN") from exc


def _octets(text: str) -> int:
    """Length in UTF-8 octets (the RFC 5321 4.5.3.1 limits count octets)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:  # lone surrogates: not text a peer can send
        raise AddressError("address is not valid UTF-8") from exc


def parse_domain(text: str) -> str:
    """Validate a domain or address literal; return it lowercased."""
    if not text or _octets(text) > MAX_DOMAIN:
        raise AddressError("domain is empty or too long")
    if text.startswith("["):
        _check_address_literal(text)
        return text
    # One trailing dot (the root) is tolerated and dropped; "a..b" and "a.." are not.
    name = text[:-1] if text.endswith(".") else text
    for label in name.split("."):
        if not _LABEL.fullmatch(label) or (label.isascii() and len(label) > 63):
            raise AddressError(f"domain {text!r} is not valid")
    # A U-label domain must have a valid A-label form (RFC 5890 2.3.2.1), so that
    # ``ascii_domain`` cannot fail later; the 63-octet limit applies to the A-label.
    if not name.isascii():
        labels = to_ascii_domain(name).split(".")
        # IDNA maps "。" and other full stops to "."; the labels must not change in number.
        if len(labels) != name.count(".") + 1 or not all(map(_LDH.fullmatch, labels)):
            raise AddressError(f"domain {text!r} is not a valid IDN")
    return name.lower()


def _check_address_literal(text: str) -> None:
    if not text.endswith("]"):
        raise AddressError("address literal is not closed")
    inner = text[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            ipaddress.IPv6Address(inner[5:])
        else:
            ipaddress.IPv4Address(inner)
    except ValueError as exc:
        raise AddressError(f"address literal {text!r} is not valid") from exc


def parse_address(text: str) -> Address:
    """Parse ``Local-part@Domain`` (without angle brackets)."""
    if _octets(text) > MAX_PATH - 2:
        raise AddressError("address is too long")
    at = text.rfind("@")
    if at <= 0:
        raise AddressError("address has no local part or no domain")
    local, domain = text[:at], text[at + 1 :]
    if not (_DOT_STRING.fullmatch(local) or _QUOTED_STRING.fullmatch(local)):
        raise AddressError(f"local part {local!r} is not valid")
    if _octets(local) > MAX_LOCAL:
        raise AddressError("local part is longer than 64 octets")
    return Address(local, parse_domain(domain))


def address_key(text: str) -> str:
    """The lookup key (``Address.key``) of the address ``text`` names, surrounding
    blanks ignored; AddressError as ``parse_address``. The last 256 keys are
    remembered: every login looks its account up by key twice (the throttle's count,
    the user's record), with the same few accounts over and over, and a parse costs
    more than the lookup it serves."""
    return _key_of(text.strip())


@functools.lru_cache(maxsize=256)
def _key_of(text: str) -> str:  # an error is raised, not remembered
    return parse_address(text).key


def path_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one file or folder name under a root without escaping it
    or hiding (empty, ``.``, ``..``, a leading dot, ``/``, ``\\``, NUL, other control
    characters); None when it can."""
    if not name:
        return "it is empty"
    if name.startswith("."):
        return "it starts with a dot"
    if (unsafe := _UNSAFE_IN_NAME.search(name)) is not None:
        return f"it holds {unsafe.group()!r}"
    return None


def mailbox_problem(address: Address) -> str | None:
    """Why ``address`` cannot name a mailbox of ours, None when it can. A mailbox is
    named by the local part (lowercased): it must be a safe path name as written, and
    so must a quoted local part's content (``".x"``, ``""``), which a mailbox store
    reading it unquoted would otherwise take as a path. (A quoted pair holds a
    backslash, refused as written.)"""
    local = address.local
    problem = path_name_problem(local)
    if problem is None and local.startswith('"'):
        problem = path_name_problem(local[1:-1])
    return problem
