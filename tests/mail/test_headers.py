from __future__ import annotations

import email
import email.policy
import email.utils
from datetime import UTC, datetime

from postroom.mail.envelope import Source, SourceKind
from postroom.mail.headers import date_header, received_header

NOW = 1_800_000_000.0


def test_received_header_form_with_tls_and_auth() -> None:
    source = Source(
        kind=SourceKind.SMTP,
        principal="app@example.test",
        client_ip="192.0.2.7",
        helo="client.example",
        protocol="ESMTPSA",
        tls="TLSv1.3 with cipher TLS_AES_256_GCM_SHA384",
    )
    header = received_header(
        source=source, hostname="mail.test", queue_id="ABC", now=NOW, for_recipient="x@y.test"
    )
    assert header == (
        b"Received: from client.example ([192.0.2.7])\r\n"
        b"\tby mail.test (postroom)\r\n"
        b"\twith ESMTPSA id ABC\r\n"
        b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n"
        b"\tfor <x@y.test>;\r\n"
        b"\tFri, 15 Jan 2027 08:00:00 +0000\r\n"
    )
    parsed = email.message_from_bytes(header + b"\r\nbody", policy=email.policy.default)
    assert "by mail.test (postroom)" in str(parsed["Received"])
    assert b"app@example.test" not in header  # the AUTH user is not disclosed


def test_client_words_cannot_break_the_header() -> None:
    source = Source(
        kind=SourceKind.SMTP,
        client_ip="192.0.2.7",
        helo="evil\r\nX-Injected: 1 (x)",
        protocol="SMTP",
    )
    header = received_header(source=source, hostname="mail.test", queue_id="ABC", now=NOW)
    assert b"\r\nX-Injected" not in header
    assert header.count(b"\r\n") == 4


def test_date_header_is_each_moments_own_second() -> None:
    # One date a second is made and reused: moments in, at the edges of and across
    # seconds (and before 1970, where truncating would round the wrong way) each get
    # their own second's date.
    moments = [1764900000.0, 1764900000.999, 1764900001.0, 1764899999.5, -0.5, 0.0, 1.25]
    for now in moments + moments[::-1]:
        expected = email.utils.format_datetime(datetime.fromtimestamp(now, UTC))
        assert date_header(now) == expected, now
