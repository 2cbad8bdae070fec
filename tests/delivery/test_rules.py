"""Route conditions: every field and operator, case rules, negation, groups, laziness."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from postroom.config.routes import ConditionGroup
from postroom.delivery.message import OutboundMessage
from postroom.delivery.rules import (
    BODY_SCAN_BYTES,
    Group,
    MessageView,
    compile_group,
)

PLAIN = (
    b"From: App <app@example.com>\r\n"
    b"To: ann@example.org\r\n"
    b"Subject: Invoice 42 for March\r\n"
    b"X-Stream: invoices\r\n"
    b"X-Tag: first\r\n"
    b"X-Tag: second\r\n"
    b"\r\n"
    b"Hello Ann,\r\nyour invoice is attached.\r\n"
)


def view(
    recipient: str = "ann@example.org",
    *,
    sender: str = "app@example.com",
    data: bytes = PLAIN,
    principal: str | None = "app@example.com",
) -> MessageView:
    message = OutboundMessage(id="Q1", sender=sender, data=data, principal=principal)
    return MessageView(message, recipient)


def group(**settings: Any) -> Group:
    return compile_group(ConditionGroup.model_validate(settings))


def condition(field: str, value: str, operator: str = "equals", **more: Any) -> Group:
    return group(conditions=[{"field": field, "operator": operator, "value": value, **more}])


# -- operators -------------------------------------------------------------------------

OPERATORS = [
    ("equals", "Invoice 42 for March", True),
    ("equals", "Invoice 42", False),
    ("contains", "42 for", True),
    ("contains", "April", False),
    ("starts_with", "Invoice", True),
    ("starts_with", "42", False),
    ("ends_with", "March", True),
    ("ends_with", "Invoice", False),
    ("regex", r"^Invoice \d+ ", True),
    ("regex", r"^\d+", False),
    ("regex", r"\d{2}", True),  # searched anywhere, not anchored
]


@pytest.mark.parametrize(("operator", "value", "expected"), OPERATORS)
def test_every_operator(operator: str, value: str, expected: bool) -> None:
    assert condition("subject", value, operator).matches(view()) is expected


@pytest.mark.parametrize(("operator", "value", "expected"), OPERATORS)
def test_negate_turns_every_operator_around(operator: str, value: str, expected: bool) -> None:
    negated = condition("subject", value, operator, negate=True)
    assert negated.matches(view()) is not expected


def test_the_operator_defaults_to_equals() -> None:
    assert group(conditions=[{"field": "sender", "value": "app@example.com"}]).matches(view())


# -- fields ----------------------------------------------------------------------------

FIELDS = [
    ("recipient", "ann@example.org"),
    ("recipient_domain", "example.org"),
    ("sender", "app@example.com"),
    ("sender_domain", "example.com"),
    ("subject", "Invoice 42 for March"),
    ("source", "app@example.com"),
]


@pytest.mark.parametrize(("field", "value"), FIELDS)
def test_each_envelope_and_header_field(field: str, value: str) -> None:
    assert condition(field, value).matches(view())
    assert not condition(field, value + "x").matches(view())


def test_addresses_and_domains_ignore_case_by_default() -> None:
    shouting = view("Ann@EXAMPLE.org", sender="App@Example.COM", principal="APP@example.com")
    for field, value in FIELDS:
        if field != "subject":
            assert condition(field, value.upper()).matches(shouting), field
    assert condition("recipient", "^ANN@", "regex").matches(shouting)


def test_text_fields_are_case_sensitive_by_default() -> None:
    assert not condition("subject", "invoice", "contains").matches(view())
    assert not condition("body", "HELLO", "contains").matches(view())
    assert condition("subject", "invoice", "contains", case_sensitive=False).matches(view())
    assert condition("subject", "^invoice", "regex", case_sensitive=False).matches(view())


def test_case_sensitive_addresses_on_request() -> None:
    assert not condition("recipient", "ANN@example.org", case_sensitive=True).matches(view())
    assert condition("recipient", "ann@example.org", case_sensitive=True).matches(view())


def test_domains_are_compared_as_a_labels() -> None:
    idn = condition("recipient_domain", "bücher.example")
    assert idn.matches(view("ann@bücher.example"))
    assert idn.matches(view("ann@xn--bcher-kva.example"))
    assert condition("recipient_domain", ".bücher.example", "ends_with").matches(
        view("ann@shop.bücher.example")
    )
    assert condition("recipient_domain", "^xn--", "regex").matches(view("ann@bücher.example"))


def test_the_null_sender() -> None:
    bounce = view(sender="")
    assert condition("sender", "").matches(bounce)
    assert condition("sender_domain", "").matches(bounce)
    assert not condition("sender_domain", "example.com").matches(bounce)


def test_no_source_matches_nothing_and_negations_hold() -> None:
    anonymous = view(principal=None)
    assert not condition("source", "", "contains").matches(anonymous)
    assert condition("source", "app@example.com", negate=True).matches(anonymous)


# -- headers ---------------------------------------------------------------------------


def test_any_header_by_name_in_any_case() -> None:
    assert condition("header", "invoices", header="x-stream").matches(view())
    assert condition("header", "invoices", header="X-STREAM").matches(view())
    assert not condition("header", "news", header="X-Stream").matches(view())


def test_a_repeated_header_matches_on_any_of_its_values() -> None:
    assert condition("header", "second", header="X-Tag").matches(view())
    assert condition("header", "first", header="X-Tag").matches(view())
    assert not condition("header", "third", header="X-Tag").matches(view())
    # negated: none of the values may match
    assert not condition("header", "second", header="X-Tag", negate=True).matches(view())


def test_a_missing_header_matches_only_negated() -> None:
    assert not condition("header", "", "contains", header="X-Absent").matches(view())
    assert condition("header", "yes", header="X-Absent", negate=True).matches(view())


def test_headers_are_unfolded_and_decoded() -> None:
    data = (
        b"Subject: =?utf-8?q?Rechnung_f=C3=BCr?=\r\n =?utf-8?q?M=C3=A4rz?=\r\n"
        b"X-Long: part one\r\n\tpart two\r\n"
        b"\r\nbody\r\n"
    )
    assert condition("subject", "Rechnung fürMärz").matches(view(data=data))
    # RFC 5322 2.2.3: unfolding removes the CRLF and keeps the white space after it
    assert condition("header", "part one\tpart two", header="X-Long").matches(view(data=data))


def test_the_header_block_ends_at_the_first_empty_line() -> None:
    data = b"Subject: real\r\n\r\nX-Stream: in the body\r\n"
    assert not condition("header", "in the body", header="X-Stream").matches(view(data=data))
    bare_lf = b"Subject: real\n\nSubject: fake\n"
    assert condition("subject", "real").matches(view(data=bare_lf))
    assert not condition("subject", "fake").matches(view(data=bare_lf))


# -- the body --------------------------------------------------------------------------


def test_body_text_of_a_plain_message() -> None:
    assert condition("body", "invoice is attached", "contains").matches(view())
    assert not condition("body", "Subject", "contains").matches(view())  # not the headers


def _multipart() -> bytes:
    attachment = base64.b64encode(b"secret-in-attachment").decode()
    html = base64.b64encode("<p>Grüße aus dem HTML-Teil</p>".encode()).decode()
    return (
        "Subject: parts\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n'
        "\r\n"
        "--b1\r\n"
        'Content-Type: multipart/alternative; boundary="b2"\r\n'
        "\r\n"
        "--b2\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n"
        "\r\n"
        "Gr=C3=BC=C3=9Fe aus dem Text-Teil\r\n"
        "--b2\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        f"{html}\r\n"
        "--b2--\r\n"
        "--b1\r\n"
        'Content-Type: text/plain; name="notes.txt"\r\n'
        'Content-Disposition: attachment; filename="notes.txt"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        f"{attachment}\r\n"
        "--b1--\r\n"
    ).encode()


def test_body_text_parts_are_decoded_and_attachments_skipped() -> None:
    data = _multipart()
    assert condition("body", "Grüße aus dem Text-Teil", "contains").matches(view(data=data))
    assert condition("body", "Grüße aus dem HTML-Teil", "contains").matches(view(data=data))
    assert not condition("body", "secret-in-attachment", "contains").matches(view(data=data))


def test_an_unknown_charset_still_matches_its_ascii() -> None:
    data = b"Content-Type: text/plain; charset=x-unknown\r\n\r\nplain words \xff\r\n"
    assert condition("body", "plain words", "contains").matches(view(data=data))


def test_only_the_start_of_a_huge_body_is_searched() -> None:
    data = b"Subject: big\r\n\r\nearly marker\r\n" + b"x" * BODY_SCAN_BYTES + b"\r\nlate marker\r\n"
    assert condition("body", "early marker", "contains").matches(view(data=data))
    assert not condition("body", "late marker", "contains").matches(view(data=data))


def test_nothing_is_parsed_when_the_envelope_decides() -> None:
    # Written body first: the envelope condition is still tested first and fails.
    rule = group(
        conditions=[
            {"field": "body", "operator": "contains", "value": "invoice"},
            {"field": "header", "header": "X-Stream", "value": "invoices"},
            {"field": "recipient_domain", "value": "elsewhere.example"},
        ]
    )
    seen = view()
    assert not rule.matches(seen)
    assert seen._parsed._headers is None and seen._parsed._body is None


def test_views_for_other_recipients_share_the_parsed_message() -> None:
    first = view()
    assert condition("body", "invoice", "contains").matches(first)
    second = first.for_recipient("bob@example.net")
    assert second._parsed is first._parsed
    assert condition("recipient", "bob@example.net").matches(second)
    assert condition("recipient", "ann@example.org").matches(first)


# -- groups ----------------------------------------------------------------------------

ORG = {"field": "recipient_domain", "value": "example.org"}
NET = {"field": "recipient_domain", "value": "example.net"}
INVOICE = {"field": "subject", "operator": "starts_with", "value": "Invoice"}
NEWS = {"field": "header", "header": "X-Stream", "value": "news"}


def test_match_all_and_any() -> None:
    assert group(conditions=[ORG, INVOICE]).matches(view())
    assert not group(conditions=[ORG, NEWS]).matches(view())
    assert group(match="any", conditions=[NET, NEWS, INVOICE]).matches(view())
    assert not group(match="any", conditions=[NET, NEWS]).matches(view())


def test_an_empty_group_matches_everything() -> None:
    assert group().matches(view())
    assert group(match="any").matches(view())
    assert group(match="any", all_of=[{"conditions": [ORG]}]).matches(view())


def test_all_of_and_any_of_combine_with_the_conditions() -> None:
    # conditions AND every all_of group AND at least one any_of group
    rule = group(
        conditions=[INVOICE],
        all_of=[{"conditions": [ORG]}],
        any_of=[{"conditions": [NEWS]}, {"match": "any", "conditions": [NET, ORG]}],
    )
    assert rule.matches(view())
    assert not rule.matches(view("bob@example.net"))  # all_of fails
    no_any = group(conditions=[INVOICE], any_of=[{"conditions": [NEWS]}, {"conditions": [NET]}])
    assert not no_any.matches(view())


def test_groups_nest() -> None:
    # (org AND (news OR (invoice AND NOT net)))
    rule = group(
        conditions=[ORG],
        any_of=[
            {"conditions": [NEWS]},
            {"all_of": [{"conditions": [INVOICE]}, {"conditions": [{**NET, "negate": True}]}]},
        ],
    )
    assert rule.matches(view())
    plain = b"Subject: Hello\r\n\r\nhi\r\n"
    assert not rule.matches(view(data=plain))
    news = b"Subject: Hello\r\nX-Stream: news\r\n\r\nhi\r\n"
    assert rule.matches(view(data=news))


def test_trace_gives_every_verdict_in_written_order() -> None:
    rule = group(match="any", conditions=[NEWS, ORG], all_of=[{"conditions": [INVOICE]}])
    result = rule.trace(view())
    assert result.matched
    assert [c.matched for c in result.conditions] == [False, True]
    assert [c.condition.text for c in result.conditions] == [
        "header X-Stream equals 'news'",
        "recipient_domain equals 'example.org'",
    ]
    assert result.conditions[0].seen == ("invoices",)
    assert result.conditions[1].seen == ("example.org",)
    assert [g.matched for g in result.all_of] == [True]
    assert result.all_of[0].conditions[0].seen == ("Invoice 42 for March",)


def test_trace_agrees_with_matches() -> None:
    rules = [
        group(conditions=[ORG, NEWS]),
        group(match="any", conditions=[NEWS], any_of=[{"conditions": [NET]}]),
        group(any_of=[{"conditions": [NET]}, {"conditions": [{**NEWS, "negate": True}]}]),
    ]
    for rule in rules:
        for recipient in ("ann@example.org", "bob@example.net"):
            seen = view(recipient)
            assert rule.trace(seen).matched is rule.matches(seen)


def test_a_case_insensitive_regex_sees_the_value_as_written() -> None:
    # Case-folding would turn "ß" into "ss"; re.IGNORECASE compares without changing it.
    sharp = view(data="Subject: Straße\r\n\r\n".encode())
    assert condition("subject", "STRAßE$", "regex", case_sensitive=False).matches(sharp)
    assert condition("subject", "STRASSE", "equals", case_sensitive=False).matches(sharp)
