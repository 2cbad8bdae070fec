"""Intake's clean-up as table cases: header blocks in, cleaned blocks and facts out; line
endings fed whole and in every split."""

from __future__ import annotations

import email.utils
import re

import dkim
import pytest
from hypothesis import given
from hypothesis import strategies as st

from postroom.intake.cleanup import (
    CleanHeader,
    LineEndings,
    LineFixer,
    Rules,
    clean_header,
    header_fields,
)
from postroom.smtp import replies

NOW = 1_795_000_000.0
QUEUE_ID = "06HHGQ2G007ES84H"
SUBMITTED = Rules("mail.test", "mail.test", submitted=True, line_endings=LineEndings.NORMALISE)
RELAYED = Rules("mail.test", "mail.test", submitted=False, line_endings=LineEndings.REFUSE)
DATED = b"Date: Mon, 1 Jan 2029 00:00:00 +0000\r\nMessage-ID: <1@shop.test>\r\n"


def clean(message: bytes, rules: Rules = SUBMITTED) -> tuple[bytes, CleanHeader]:
    """The message as intake stores it (without the fields it prepends), and the facts."""
    cleaned = clean_header(message, rules, now=NOW, queue_id=QUEUE_ID)
    head = message[: cleaned.consumed] if cleaned.head is None else cleaned.head
    return head + message[cleaned.consumed :], cleaned


@pytest.mark.parametrize(
    ("given", "rules", "stored"),
    [
        pytest.param(
            b"From: a@shop.test\r\nBcc: x@a.test,\r\n\ty@b.test\r\nSubject: s\r\n\r\nb\r\n",
            SUBMITTED,
            b"From: a@shop.test\r\nSubject: s\r\n\r\nb\r\n",
            id="folded-bcc",
        ),
        pytest.param(
            b"BCC : x@a.test\r\nbcc:y@b.test\r\nSubject: s\r\n\r\nb\r\n",
            SUBMITTED,
            b"Subject: s\r\n\r\nb\r\n",
            id="bcc-spellings",
        ),
        pytest.param(
            b"Bcc: x@a.test\r\nSubject: s\r\n\r\nb\r\n",
            RELAYED,
            b"Bcc: x@a.test\r\nSubject: s\r\n\r\nb\r\n",
            id="bcc-kept-in-relayed-mail",
        ),
        pytest.param(
            b"Authentication-Results: mail.test; dkim=pass\r\n header.d=bank.test\r\n"
            b"Authentication-Results: other.test; spf=pass smtp.mailfrom=a.test\r\n"
            b"authentication-results : (comment) MAIL.TEST ; dmarc=pass\r\n"
            b"Subject: s\r\n\r\nb\r\n",
            RELAYED,
            b"Authentication-Results: other.test; spf=pass smtp.mailfrom=a.test\r\n"
            b"Subject: s\r\n\r\nb\r\n",
            id="our-authentication-results-removed",
        ),
        pytest.param(
            b"Subject: s\r\n\r\nAuthentication-Results: mail.test; dkim=pass\r\nBcc: x\r\n",
            SUBMITTED,
            b"Subject: s\r\n\r\nAuthentication-Results: mail.test; dkim=pass\r\nBcc: x\r\n",
            id="the-body-is-not-header",
        ),
        pytest.param(
            b"Subject : s\r\nFROM\t: a@shop.test\r\n\r\nb\r\n",
            RELAYED,
            b"Subject: s\r\nFROM: a@shop.test\r\n\r\nb\r\n",
            id="space-before-colon",
        ),
        pytest.param(
            b"From: a@shop.test\r\nno colon here\r\nTo: b@c.test\r\n\r\nb\r\n",
            RELAYED,
            b"From: a@shop.test\r\n\r\nno colon here\r\nTo: b@c.test\r\n\r\nb\r\n",
            id="a-line-without-colon-starts-the-body",
        ),
        pytest.param(b"just text\r\n", RELAYED, b"\r\njust text\r\n", id="no-header-at-all"),
        pytest.param(
            b" folded first\r\nSubject: s\r\n\r\nb\r\n",
            RELAYED,
            b"\r\n folded first\r\nSubject: s\r\n\r\nb\r\n",
            id="continuation-without-field",
        ),
        pytest.param(b"Subject: s\r\n", RELAYED, b"Subject: s\r\n\r\n", id="header-only"),
        pytest.param(b"", RELAYED, b"\r\n", id="empty"),
        pytest.param(
            b"Subject: caf\xc3\xa9\r\n\xff\xfe: x\r\n\r\nb\r\n",
            RELAYED,
            b"Subject: caf\xc3\xa9\r\n\r\n\xff\xfe: x\r\n\r\nb\r\n",
            id="eight-bit-field-name",
        ),
    ],
)
def test_the_header_block_as_stored(given: bytes, rules: Rules, stored: bytes) -> None:
    message, _ = clean(DATED + given if rules.submitted else given, rules)
    assert message == (DATED + stored if rules.submitted else stored)
    dkim.rfc822_parse(message)  # every stored header block is one dkimpy reads


def test_an_unchanged_header_block_is_not_rewritten() -> None:
    message = b"From: a@shop.test\r\n" + DATED + b"\r\nbody\r\n"
    cleaned = clean_header(message, SUBMITTED, now=NOW, queue_id=QUEUE_ID)
    assert cleaned.head is None and cleaned.added == b"" and cleaned.removed == ()
    assert cleaned.consumed == message.index(b"\r\n\r\n") + 4
    assert cleaned.message_id == "<1@shop.test>"


def test_submitted_mail_gets_date_and_message_id() -> None:
    _, cleaned = clean(b"From: a@shop.test\r\nSubject: s\r\n\r\nb\r\n")
    fields = cleaned.added.decode()
    date = fields.split("Date: ")[1].split("\r\n")[0]
    assert email.utils.parsedate_to_datetime(date).timestamp() == NOW
    assert cleaned.message_id is not None
    assert re.fullmatch(rf"<{QUEUE_ID}\.[0-9a-f]{{8}}@mail\.test>", cleaned.message_id)
    assert f"Message-ID: {cleaned.message_id}\r\n" in fields


def test_blank_date_and_message_id_are_replaced() -> None:
    message, cleaned = clean(b"Date:\r\nMessage-Id: \r\nSubject: s\r\n\r\nb\r\n")
    assert message == b"Subject: s\r\n\r\nb\r\n"
    assert cleaned.removed == ("date", "message-id")
    assert cleaned.added.startswith(b"Date: ") and b"\r\nMessage-ID: <" in cleaned.added


def test_relayed_mail_is_not_completed() -> None:
    _, cleaned = clean(b"Subject: s\r\n\r\nb\r\n", RELAYED)
    assert cleaned.added == b"" and cleaned.message_id is None


def test_a_folded_message_id_is_read_unfolded() -> None:
    _, cleaned = clean(b"Message-ID:\r\n <x@y.test>\r\nDate: d\r\n\r\n")
    assert cleaned.message_id == "<x@y.test>" and cleaned.added == b""


def test_a_header_block_cut_at_the_read_limit_ends_at_its_last_whole_line() -> None:
    start = b"Subject: s\r\nX-Long: " + b"y" * 100  # what was read; the line goes on
    cleaned = clean_header(start, RELAYED, now=NOW, queue_id=QUEUE_ID)
    assert (cleaned.consumed, cleaned.head) == (12, b"Subject: s\r\n\r\n")


def test_header_fields_reads_any_line_end() -> None:
    fields, length, ended = header_fields(b"To: a@b.test\n c@d.test\nSubject: s\n\nbody\n")
    assert fields == [b"To: a@b.test\n c@d.test\n", b"Subject: s\n"]
    assert (length, ended) == (35, True)


# -- line endings ----------------------------------------------------------------------


def fix(chunks: list[bytes], mode: LineEndings) -> tuple[bytes, LineFixer]:
    fixer = LineFixer(mode)
    out = b"".join(fixer.feed(chunk) for chunk in chunks) + fixer.finish()
    return out, fixer


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"a\rb\r", b"a\r\nb\r\n"),
        (b"a\r\r\nb", b"a\r\n\r\nb\r\n"),
        (b"a\n\rb\r\n", b"a\r\n\r\nb\r\n"),
        (b"no end", b"no end\r\n"),
        (b"", b""),
    ],
)
def test_bare_cr_and_lf_become_crlf_for_whole_messages(given: bytes, normalised: bytes) -> None:
    out, fixer = fix([given], LineEndings.NORMALISE)
    assert out == normalised
    assert fixer.refusal is None
    for split in range(len(given) + 1):  # a CR at a chunk's end waits for its LF
        assert fix([given[:split], given[split:]], LineEndings.NORMALISE)[0] == normalised


@pytest.mark.parametrize("given", [b"a\nb\r\n", b"a\rb\r\n", b"a\r\nb\r"])
def test_smtp_refuses_bare_cr_and_lf(given: bytes) -> None:
    _, fixer = fix([given], LineEndings.REFUSE)
    assert fixer.refusal == replies.BAD_LINE_ENDINGS


def test_a_nul_is_refused_from_every_source() -> None:
    smuggled = [b"Subject: s\r\n\r\n", b"\r\n\x00.\r\n"]
    assert fix(smuggled, LineEndings.NORMALISE)[1].refusal == replies.NUL_IN_MESSAGE
    assert fix(smuggled, LineEndings.REFUSE)[1].refusal == replies.BAD_LINE_ENDINGS


@given(st.binary(max_size=64), st.lists(st.integers(0, 64), max_size=6))
def test_splitting_changes_nothing_and_the_result_is_canonical(
    data: bytes, cuts: list[int]
) -> None:
    whole, fixer = fix([data], LineEndings.NORMALISE)
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert fix(pieces, LineEndings.NORMALISE)[0] == whole
    assert whole.count(b"\r") == whole.count(b"\n") == whole.count(b"\r\n")
    assert (fixer.refusal is not None) == (b"\x00" in data)


HEADERISH = st.lists(
    st.sampled_from(
        [b"From: a@b.test", b"BCC : x", b"Subject :s", b" folded", b"\tmore", b"no colon",
         b"", b"Authentication-Results: mail.test; x", b"\xff: y", b"Date:", b"X:"]
    )
    | st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    max_size=8,
)  # fmt: skip


@given(HEADERISH, st.booleans())
def test_any_cleaned_header_block_is_read_alike_and_cleaning_it_again_changes_nothing(
    lines: list[bytes], submitted: bool
) -> None:
    rules = SUBMITTED if submitted else RELAYED
    message, first = clean(b"".join(line + b"\r\n" for line in lines), rules)
    message = first.added + message  # as stored, but for Received:
    dkim.rfc822_parse(message)  # raises on what it cannot read
    again = clean_header(message, rules, now=NOW, queue_id=QUEUE_ID)
    end = 2 if message.startswith(b"\r\n") else message.index(b"\r\n\r\n") + 4
    assert (again.head, again.consumed, again.added, again.removed) == (None, end, b"", ())
