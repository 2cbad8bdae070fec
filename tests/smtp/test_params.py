"""MAIL FROM / RCPT TO parameters -> typed values or the refusing reply."""

from __future__ import annotations

import pytest

from postroom.mail.address import Address
from postroom.mail.envelope import DsnRequest, Notify, Ret
from postroom.smtp import replies as r
from postroom.smtp.events import MailFrom, RcptTo
from postroom.smtp.params import (
    MailParams,
    Offered,
    RcptParams,
    mail_from,
    parse_mail_params,
    parse_rcpt_params,
    rcpt_to,
)
from postroom.smtp.replies import Reply

OFFERED = Offered(max_size=1000, smtputf8=True, dsn=True, auth=True)
PLAIN = Offered(max_size=1000, smtputf8=False, dsn=False, auth=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", MailParams()),
        ("SIZE=0", MailParams(size=0)),
        ("SIZE=1000", MailParams(size=1000)),
        ("size=999", MailParams(size=999)),
        ("BODY=7BIT", MailParams(body="7BIT")),
        ("BODY=8bitmime", MailParams(body="8BITMIME")),
        ("SMTPUTF8", MailParams(smtputf8=True)),
        ("RET=FULL", MailParams(ret=Ret.FULL)),
        ("RET=hdrs", MailParams(ret=Ret.HDRS)),
        ("ENVID=QQ314159+2B", MailParams(envid="QQ314159+")),
        ("ENVID=" + "x" * 100, MailParams(envid="x" * 100)),
        ("AUTH=<>", MailParams(auth="<>")),
        ("AUTH=e+2Bx@example.org", MailParams(auth="e+x@example.org")),
        (
            "SIZE=5 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id AUTH=<>",
            MailParams(5, "8BITMIME", True, Ret.HDRS, "id", "<>"),
        ),
    ],
)
def test_mail_params(text: str, expected: MailParams) -> None:
    assert parse_mail_params(text, OFFERED) == expected


@pytest.mark.parametrize(
    ("text", "reply"),
    [
        ("SIZE=1001", r.MESSAGE_TOO_BIG),  # RFC 1870 6.1
        ("SIZE", r.PARAMETER_SYNTAX),
        ("SIZE=-1", r.PARAMETER_SYNTAX),
        ("SIZE=1" + "0" * 20, r.PARAMETER_SYNTAX),
        ("SIZE=١٢", r.PARAMETER_SYNTAX),  # Arabic-Indic digits are not DIGIT
        ("SIZE=1 SIZE=1", r.DUPLICATE_PARAMETER),
        ("BODY=BINARYMIME", r.PARAMETER_NOT_IMPLEMENTED),
        ("BODY=9BIT", r.PARAMETER_SYNTAX),
        ("BODY", r.PARAMETER_SYNTAX),
        ("SMTPUTF8=yes", r.PARAMETER_SYNTAX),
        ("RET=ALL", r.PARAMETER_SYNTAX),
        ("RET", r.PARAMETER_SYNTAX),
        ("ENVID=" + "x" * 101, r.PARAMETER_SYNTAX),
        ("ENVID=a+0Ab", r.PARAMETER_SYNTAX),  # decodes to a control character
        ("ENVID=a+C3+B6", r.PARAMETER_SYNTAX),  # ENVID is US-ASCII
        ("ENVID", r.PARAMETER_SYNTAX),
        ("AUTH", r.PARAMETER_SYNTAX),
        ("AUTH=a+ZZ", r.PARAMETER_SYNTAX),
        ("NOTIFY=NEVER", r.PARAMETER_NOT_RECOGNIZED),
        ("XFORWARD=1", r.PARAMETER_NOT_RECOGNIZED),
        ("=", r.PARAMETER_SYNTAX),
    ],
)
def test_mail_param_refusals(text: str, reply: Reply) -> None:
    assert parse_mail_params(text, OFFERED) == reply


@pytest.mark.parametrize("text", ["SMTPUTF8", "RET=FULL", "ENVID=x", "AUTH=<>"])
def test_mail_params_not_offered(text: str) -> None:
    assert parse_mail_params(text, PLAIN) == r.PARAMETER_NOT_RECOGNIZED


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", RcptParams()),
        ("NOTIFY=NEVER", RcptParams(notify=frozenset({Notify.NEVER}))),
        ("NOTIFY=success", RcptParams(notify=frozenset({Notify.SUCCESS}))),
        (
            "NOTIFY=SUCCESS,FAILURE,DELAY",
            RcptParams(notify=frozenset({Notify.SUCCESS, Notify.FAILURE, Notify.DELAY})),
        ),
        ("ORCPT=rfc822;a+2Bb@example.org", RcptParams(orcpt="rfc822;a+b@example.org")),
        ("ORCPT=utf-8;jörg@example.org", RcptParams(orcpt="utf-8;jörg@example.org")),
        (
            "NOTIFY=FAILURE ORCPT=rfc822;a@b.c",
            RcptParams(frozenset({Notify.FAILURE}), "rfc822;a@b.c"),
        ),
    ],
)
def test_rcpt_params(text: str, expected: RcptParams) -> None:
    assert parse_rcpt_params(text, OFFERED) == expected


@pytest.mark.parametrize(
    ("text", "reply"),
    [
        ("NOTIFY=NEVER,SUCCESS", r.PARAMETER_SYNTAX),  # RFC 3461 4.1: NEVER stands alone
        ("NOTIFY=SOMETIMES", r.PARAMETER_SYNTAX),
        ("NOTIFY=SUCCESS,", r.PARAMETER_SYNTAX),
        ("NOTIFY", r.PARAMETER_SYNTAX),
        ("NOTIFY=DELAY NOTIFY=DELAY", r.DUPLICATE_PARAMETER),
        ("ORCPT=rfc822", r.PARAMETER_SYNTAX),
        ("ORCPT=;a@b.c", r.PARAMETER_SYNTAX),
        ("ORCPT=rfc822;", r.PARAMETER_SYNTAX),
        ("ORCPT=rfc(822);a@b.c", r.PARAMETER_SYNTAX),
        ("ORCPT=rfc822;a+ZZ", r.PARAMETER_SYNTAX),
        ("ORCPT=rfc822;" + "a" * 500, r.PARAMETER_SYNTAX),
        ("SIZE=10", r.PARAMETER_NOT_RECOGNIZED),
        ("BODY=7BIT", r.PARAMETER_NOT_RECOGNIZED),
    ],
)
def test_rcpt_param_refusals(text: str, reply: Reply) -> None:
    assert parse_rcpt_params(text, OFFERED) == reply


def test_rcpt_params_without_dsn() -> None:
    assert parse_rcpt_params("NOTIFY=NEVER", PLAIN) == r.PARAMETER_NOT_RECOGNIZED


def test_mail_from() -> None:
    assert mail_from("FROM:<a@b.c> RET=HDRS", OFFERED) == MailFrom(
        Address("a", "b.c"), None, None, False, DsnRequest(ret=Ret.HDRS), None
    )
    assert mail_from("FROM:<a@b.c", OFFERED) == r.MAIL_SYNTAX
    assert mail_from("FROM:<a@>", OFFERED) == r.BAD_SENDER_SYNTAX
    assert mail_from("FROM:<ö@b.c>", OFFERED) == r.NON_ASCII_ADDRESS
    assert mail_from("FROM:<a@b.c> FOO", OFFERED) == r.PARAMETER_NOT_RECOGNIZED


def test_rcpt_to() -> None:
    event = rcpt_to("TO:<a@b.c>", OFFERED, hostname="mx.test", smtputf8=False)
    assert event == RcptTo(Address("a", "b.c"), None, None)
    assert rcpt_to("TO:a@b.c", OFFERED, hostname="mx.test", smtputf8=False) == r.RCPT_SYNTAX
    assert rcpt_to("TO:<>", OFFERED, hostname="mx.test", smtputf8=False) == r.BAD_RECIPIENT_SYNTAX
    assert rcpt_to("TO:<ö@b.c>", OFFERED, hostname="x", smtputf8=False) == r.NON_ASCII_ADDRESS
    assert isinstance(rcpt_to("TO:<ö@b.c>", OFFERED, hostname="x", smtputf8=True), RcptTo)
