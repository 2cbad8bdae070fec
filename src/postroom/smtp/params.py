"""MAIL FROM / RCPT TO arguments (RFC 5321 4.1.1.2-3, 4.1.2) -> events, or the Reply refusing them.

One table per command maps each esmtp-param keyword to the extension that must have
been offered and the parser of its value. A keyword we do not know or did not offer gets
``555 5.5.4`` (RFC 5321 4.1.1.11); the same keyword twice gets ``501 5.5.4``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Final, TypeVar

from postroom.errors import AddressError
from postroom.mail.envelope import DsnRequest, Notify, Ret
from postroom.smtp import replies
from postroom.smtp.events import MailFrom, RcptTo
from postroom.smtp.grammar import (
    parse_forward_path,
    parse_params,
    parse_reverse_path,
    split_path_argument,
    xtext_decode,
)
from postroom.smtp.replies import Reply

__all__ = [
    "MailParams",
    "Offered",
    "RcptParams",
    "mail_from",
    "parse_mail_params",
    "parse_rcpt_params",
    "rcpt_to",
]

MAX_ENVID: Final = 100  # RFC 3461 4.4
MAX_ORCPT: Final = 500  # RFC 3461 4.2
_SIZE_DIGITS: Final = 20  # RFC 1870 4: size-value ::= 1*20DIGIT
_ATOM: Final = frozenset("!#$%&'*+-/0123456789=?^_`{|}~" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True, slots=True)
class Offered:
    """The extensions this connection announced, which decide the parameters it takes."""

    max_size: int
    smtputf8: bool = True
    dsn: bool = True
    auth: bool = False


@dataclass(frozen=True, slots=True)
class MailParams:
    size: int | None = None  # RFC 1870
    body: str | None = None  # RFC 6152: 7BIT | 8BITMIME
    smtputf8: bool = False  # RFC 6531 3.4
    ret: Ret | None = None  # RFC 3461 4.3
    envid: str | None = None  # RFC 3461 4.4, xtext-decoded
    auth: str | None = None  # RFC 4954 5, xtext-decoded; "<>" when unknown


@dataclass(frozen=True, slots=True)
class RcptParams:
    notify: frozenset[Notify] | None = None  # RFC 3461 4.1
    orcpt: str | None = None  # RFC 3461 4.2: "addr-type;address", xtext-decoded


P = TypeVar("P", MailParams, RcptParams)
_Parser = Callable[[str | None, Offered, P], P | Reply]
_Gate = Callable[[Offered], bool]


def _always(_: Offered) -> bool:
    return True


def _if_dsn(offered: Offered) -> bool:
    return offered.dsn


def _if_smtputf8(offered: Offered) -> bool:
    return offered.smtputf8


def _if_auth(offered: Offered) -> bool:
    return offered.auth


# -- MAIL FROM -------------------------------------------------------------------------------
def _size(value: str | None, offered: Offered, acc: MailParams) -> MailParams | Reply:
    if value is None or not value.isascii() or not value.isdigit() or len(value) > _SIZE_DIGITS:
        return replies.PARAMETER_SYNTAX
    size = int(value)
    if size > offered.max_size:  # RFC 1870 6.1: 552 for more than the fixed maximum
        return replies.MESSAGE_TOO_BIG
    return replace(acc, size=size)


_BODY_TYPES: Final[Mapping[str, str | Reply]] = {
    "7BIT": "7BIT",
    "8BITMIME": "8BITMIME",  # RFC 6152
    "BINARYMIME": replies.PARAMETER_NOT_IMPLEMENTED,  # RFC 3030 3: we do not offer it
}


def _body(value: str | None, _: Offered, acc: MailParams) -> MailParams | Reply:
    body = _BODY_TYPES.get((value or "").upper(), replies.PARAMETER_SYNTAX)
    return body if isinstance(body, Reply) else replace(acc, body=body)


def _smtputf8(value: str | None, _: Offered, acc: MailParams) -> MailParams | Reply:
    if value is not None:  # RFC 6531 3.4: the parameter has no value
        return replies.PARAMETER_SYNTAX
    return replace(acc, smtputf8=True)


def _ret(value: str | None, _: Offered, acc: MailParams) -> MailParams | Reply:
    try:
        return replace(acc, ret=Ret((value or "").upper()))
    except ValueError:
        return replies.PARAMETER_SYNTAX


def _envid(value: str | None, _: Offered, acc: MailParams) -> MailParams | Reply:
    envid = xtext_decode(value or "")
    # RFC 3461 4.4: printable US-ASCII before xtext encoding, at most 100 characters.
    if not value or envid is None or len(envid) > MAX_ENVID or not _printable_ascii(envid):
        return replies.PARAMETER_SYNTAX
    return replace(acc, envid=envid)


def _auth(value: str | None, _: Offered, acc: MailParams) -> MailParams | Reply:
    if value == "<>":  # RFC 4954 5: the submitter is not known or not trusted
        return replace(acc, auth="<>")
    mailbox = xtext_decode(value or "")
    if not value or mailbox is None:
        return replies.PARAMETER_SYNTAX
    return replace(acc, auth=mailbox)


# -- RCPT TO ---------------------------------------------------------------------------------
def _notify(value: str | None, _: Offered, acc: RcptParams) -> RcptParams | Reply:
    try:
        words = [Notify(word) for word in (value or "").upper().split(",")]
    except ValueError:
        return replies.PARAMETER_SYNTAX
    # RFC 3461 4.1: NEVER stands alone; otherwise any of SUCCESS, FAILURE, DELAY.
    if Notify.NEVER in words and len(words) > 1:
        return replies.PARAMETER_SYNTAX
    return replace(acc, notify=frozenset(words))


def _orcpt(value: str | None, _: Offered, acc: RcptParams) -> RcptParams | Reply:
    addr_type, semicolon, address = (value or "").partition(";")
    if not semicolon or not addr_type or not address or len(value or "") > MAX_ORCPT:
        return replies.PARAMETER_SYNTAX
    if not set(addr_type.upper()) <= _ATOM:
        return replies.PARAMETER_SYNTAX
    if addr_type.lower() == "utf-8":  # RFC 6533 3: utf-8-addr-xtext, kept as given
        decoded: str | None = address
    else:
        decoded = xtext_decode(address)
    if decoded is None or not decoded.isprintable():
        return replies.PARAMETER_SYNTAX
    return replace(acc, orcpt=f"{addr_type};{decoded}")


def _printable_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable()


_MAIL_PARAMS: Final[Mapping[str, tuple[_Gate, _Parser[MailParams]]]] = {
    "SIZE": (_always, _size),
    "BODY": (_always, _body),
    "SMTPUTF8": (_if_smtputf8, _smtputf8),
    "RET": (_if_dsn, _ret),
    "ENVID": (_if_dsn, _envid),
    "AUTH": (_if_auth, _auth),
}
_RCPT_PARAMS: Final[Mapping[str, tuple[_Gate, _Parser[RcptParams]]]] = {
    "NOTIFY": (_if_dsn, _notify),
    "ORCPT": (_if_dsn, _orcpt),
}


def _parse(
    text: str, table: Mapping[str, tuple[_Gate, _Parser[P]]], start: P, offered: Offered
) -> P | Reply:
    words = parse_params(text)
    if words is None:
        return replies.PARAMETER_SYNTAX
    seen: set[str] = set()
    acc = start
    for keyword, value in words:
        entry = table.get(keyword)
        if entry is None or not entry[0](offered):
            return replies.PARAMETER_NOT_RECOGNIZED
        if keyword in seen:
            return replies.DUPLICATE_PARAMETER
        seen.add(keyword)
        result = entry[1](value, offered, acc)
        if isinstance(result, Reply):
            return result
        acc = result
    return acc


def parse_mail_params(text: str, offered: Offered) -> MailParams | Reply:
    return _parse(text, _MAIL_PARAMS, MailParams(), offered)


def parse_rcpt_params(text: str, offered: Offered) -> RcptParams | Reply:
    return _parse(text, _RCPT_PARAMS, RcptParams(), offered)


def mail_from(argument: str, offered: Offered) -> MailFrom | Reply:
    """``FROM:<reverse-path> [params]`` -> the MailFrom event."""
    parts = split_path_argument(argument, "FROM")
    if parts is None:
        return replies.MAIL_SYNTAX
    path, text = parts
    params = parse_mail_params(text, offered)
    if isinstance(params, Reply):
        return params
    try:
        sender = parse_reverse_path(path)
    except AddressError:
        return replies.BAD_SENDER_SYNTAX
    if not path.isascii() and not params.smtputf8:  # RFC 6531 3.5
        return replies.NON_ASCII_ADDRESS
    dsn = DsnRequest(ret=params.ret, envid=params.envid)
    return MailFrom(sender, params.size, params.body, params.smtputf8, dsn, params.auth)


def rcpt_to(argument: str, offered: Offered, *, hostname: str, smtputf8: bool) -> RcptTo | Reply:
    """``TO:<forward-path> [params]`` -> the RcptTo event; ``smtputf8``: MAIL said SMTPUTF8."""
    parts = split_path_argument(argument, "TO")
    if parts is None:
        return replies.RCPT_SYNTAX
    path, text = parts
    params = parse_rcpt_params(text, offered)
    if isinstance(params, Reply):
        return params
    try:
        recipient = parse_forward_path(path, hostname)
    except AddressError:
        return replies.BAD_RECIPIENT_SYNTAX
    if not path.isascii() and not smtputf8:  # RFC 6531 3.5
        return replies.NON_ASCII_ADDRESS
    return RcptTo(recipient, params.notify, params.orcpt)
