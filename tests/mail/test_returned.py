"""Returned mail: RFC 3464 reports, plain-text notices and auto-replies told apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.mail.returned import BouncedRecipient, ReturnedKind, read_returned

CORPUS = Path(__file__).parent.parent / "data" / "returned"


def read(name: str) -> bytes:
    return (CORPUS / name).read_bytes().replace(b"\n", b"\r\n")


def test_rfc3464_report_gives_each_recipient_with_action_status_and_diagnostic() -> None:
    returned = read_returned(read("rfc3464_postfix.eml"))

    assert returned.kind is ReturnedKind.BOUNCE
    assert returned.reporting_mta == "mx.example.net"
    assert returned.original_message_id == "<welcome.42@send.example.com>"
    first, second = returned.recipients
    # Original-Recipient wins over Final-Recipient: it is the address we sent to.
    assert first == BouncedRecipient(
        "nobody@example.net", "failed", "5.1.1", 'unknown user: "nobody"'
    )
    assert first.hard
    assert second.action == "delayed" and second.status == "4.4.1"
    assert second.diagnostic == "421 4.4.1 connection timed out after 30 seconds"
    assert second.remote_mta == "inner.example.net"
    assert not second.hard


@pytest.mark.parametrize(
    ("name", "address", "status", "diagnostic_start", "message_id"),
    [
        (
            "exim.eml",
            "gone@example.org",
            "5.1.1",
            "550 5.1.1 <gone@example.org>",
            "<invoice.7@send.example.com>",
        ),
        (
            "qmail.eml",
            "olduser@example.info",
            "5.1.1",  # from its words: it has no enhanced code
            "550 No such user here",
            "<q.1@send.example.com>",
        ),
        (
            "exchange.eml",
            "jane.doe@corp.example.com",
            "5.1.10",
            "550 5.1.10 RESOLVER",
            "<numbers.3@send.example.com>",
        ),
        ("gmail.eml", "no.such.person@gmail.example", "5.1.1", "550 5.1.1 The email account", None),
    ],
)
def test_plain_text_notices_give_the_failed_recipient(
    name: str, address: str, status: str, diagnostic_start: str, message_id: str | None
) -> None:
    returned = read_returned(read(name))

    assert returned.kind is ReturnedKind.BOUNCE
    (recipient,) = returned.recipients  # never the notice's own From or our bounce address
    assert recipient.address == address
    assert recipient.action == "failed"
    assert recipient.status == status
    assert recipient.diagnostic.startswith(diagnostic_start)
    assert recipient.hard
    assert returned.original_message_id == message_id


def test_a_delay_warning_is_a_delayed_recipient_not_a_hard_bounce() -> None:
    returned = read_returned(read("exim_delay.eml"))

    (recipient,) = returned.recipients
    assert (recipient.address, recipient.action, recipient.status) == (
        "busy@example.org",
        "delayed",
        "4.3.0",
    )
    assert not recipient.hard


@pytest.mark.parametrize("name", ["vacation.eml", "exchange_ooo.eml"])
def test_out_of_office_answers_are_auto_replies(name: str) -> None:
    returned = read_returned(read(name))

    assert returned.kind is ReturnedKind.AUTO_REPLY
    assert returned.recipients == ()


def test_a_persons_answer_naming_an_address_is_neither() -> None:
    assert read_returned(read("person.eml")).kind is ReturnedKind.OTHER


@pytest.mark.parametrize(
    ("status", "action", "hard"),
    [
        ("5.1.1", "failed", True),
        ("5.1.10", "failed", True),
        ("5.0.0", "failed", False),  # no detail: not enough to strike the address off
        ("5.2.1", "failed", False),  # mailbox disabled: it may come back
        ("5.2.2", "failed", False),  # mailbox full: it may empty
        ("5.7.1", "failed", False),  # policy: the address is not at fault
        ("4.2.2", "delayed", False),
        ("5.1.1", "delayed", False),
    ],
)
def test_hard_means_the_address_itself_is_bad(status: str, action: str, hard: bool) -> None:
    assert BouncedRecipient("a@example.net", action, status, "").hard is hard


def test_garbage_never_raises() -> None:
    for data in (
        b"",
        b"\xff\xfe\x00",
        b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\n",
    ):
        assert read_returned(data).kind is ReturnedKind.OTHER
