"""A delivery's recipients as the To/Cc/Bcc of JSON requests; Bcc headers for raw-MIME APIs."""

from __future__ import annotations

from postroom.delivery.mailers.api.mimeparts import Mailbox, ParsedMessage
from postroom.delivery.mailers.api.oauthmailer import with_bcc
from postroom.delivery.mailers.api.rcptsplit import Addressed, split


def _parsed(to: list[str], cc: list[str] = []) -> ParsedMessage:  # noqa: B006
    return ParsedMessage(
        sender=Mailbox("a@example.org"),
        to=tuple(Mailbox(a, a.split("@")[0].title()) for a in to),
        cc=tuple(Mailbox(a) for a in cc),
    )


def test_header_addresses_outside_the_delivery_are_left_out() -> None:
    parsed = _parsed(["x@example.net", "y@example.net"], ["z@example.net"])
    [group] = split(parsed, ["Y@Example.net", "hidden@example.com"])
    assert group == Addressed(
        to=(Mailbox("Y@Example.net", "Y"),), bcc=(Mailbox("hidden@example.com"),)
    )


def test_caps_spread_recipients_over_requests() -> None:
    to = [f"t{i}@example.net" for i in range(5)]
    cc = [f"c{i}@example.net" for i in range(3)]
    hidden = [f"h{i}@example.com" for i in range(4)]
    groups = split(_parsed(to, cc), to + cc + hidden, max_to=2, max_cc=2, max_bcc=1)
    assert [(len(g.to), len(g.cc), len(g.bcc)) for g in groups] == [
        (2, 2, 1), (2, 1, 1), (1, 0, 1), (1, 0, 0),
    ]  # fmt: skip
    assert groups[-1].to == (Mailbox("h3@example.com"),)  # left alone: in To of its own
    assert sorted(a for g in groups for a in g.recipients) == sorted(to + cc + hidden)


def test_bcc_only_recipients_each_get_their_own_request() -> None:
    groups = split(_parsed(["x@example.net"]), ["b1@example.com", "b2@example.com"])
    assert groups == [
        Addressed((Mailbox("b1@example.com"),)),
        Addressed((Mailbox("b2@example.com"),)),
    ]


def test_with_bcc_names_only_the_recipients_no_header_names() -> None:
    data = (
        b"From: a@example.org\r\nTo: X <x@example.net>,\r\n y@example.net\r\n"
        b"Cc: z@example.net\r\n\r\nTo: not@header\r\n"  # the body's "To:" is no header
    )
    assert with_bcc(data, ["x@example.net", "Y@example.net", "z@example.net"]) == data
    assert with_bcc(data, ["x@example.net", "not@header", "w@example.com"]) == (
        b"Bcc: not@header, w@example.com\r\n" + data
    )
