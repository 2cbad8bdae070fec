"""The clean-up inside a Submission, against a real SQLite store: bodies that arrive in
chunks (one byte at a time, or spooled to disk) come out as the table cases say."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from postroom.intake import ANY_SENDER, Intake, Principal, Queued
from postroom.mail.address import parse_address
from postroom.mail.envelope import Recipient, Source, SourceKind
from postroom.smtp import replies
from postroom.store import Store, open_store
from tests.conftest import FakeClock

SUBMITTED = Source(kind=SourceKind.SMTP, principal="app@example.test", protocol="ESMTPSA")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(f"sqlite:///{tmp_path / 'q.db'}")
    yield opened
    await opened.aclose()


def intake(store: Store, tmp_path: Path) -> Intake:
    return Intake(
        store=store,
        clock=FakeClock(),
        hostname="mail.test",
        spool_dir=tmp_path / "spool",
        spool_memory=1024,  # bigger bodies go to a file, as large mail does
        max_message_size=10 * 1024 * 1024,
    )


async def send(intake: Intake, source: Source, chunks: list[bytes]) -> tuple[str, bytes]:
    principal = Principal("app@example.test", ANY_SENDER) if source.principal else None
    submission = await intake.begin(source, parse_address("app@example.test"), principal=principal)
    assert not isinstance(submission, replies.Reply)
    reply = await submission.add_recipient(Recipient(parse_address("friend@remote.test")))
    assert reply.is_positive, reply
    for chunk in chunks:
        submission.write(chunk)
    reply = await submission.commit()
    assert reply.is_positive, reply
    body = await intake.store.read_body(submission.queue_id)
    assert body is not None
    return submission.queue_id, body


async def test_a_header_cleaned_across_chunks_and_a_body_spooled_to_disk(
    store: Store, tmp_path: Path
) -> None:
    message = (
        b"From: app@example.test\r\nBcc: hidden@remote.test,\r\n\tother@remote.test\r\n"
        b"Authentication-Results: mail.test; dkim=pass\r\nSubject: s\r\n\r\n"
        + b"a line of the body that is long enough to count\r\n"
        * 2000
    )
    one_byte = [message[i : i + 1] for i in range(300)] + [message[300:]]
    queue_id, body = await send(intake(store, tmp_path), SUBMITTED, one_byte)
    head, _, rest = body.partition(b"\r\n\r\n")
    assert rest == message.partition(b"\r\n\r\n")[2]  # the body, byte for byte
    assert b"Bcc" not in head and b"hidden@" not in head and b"other@" not in head
    assert b"Authentication-Results" not in head
    assert f"Message-ID: <{queue_id}.".encode() in head


async def test_submit_returns_the_message_id_the_message_leaves_with(
    store: Store, tmp_path: Path
) -> None:
    queued = await intake(store, tmp_path).submit(
        Source(kind=SourceKind.API, principal="app"),
        parse_address("app@example.test"),
        [Recipient(parse_address("friend@remote.test"))],
        b"From: app@example.test\nSubject: s\n\nbody\n",
        principal=Principal("app", ANY_SENDER),
    )
    assert isinstance(queued, Queued)
    body = await store.read_body(queued.queue_id)
    assert body is not None
    assert f"Message-ID: {queued.message_id}\r\n".encode() in body
    assert body.endswith(b"\r\n\r\nbody\r\n")  # LF made CRLF


async def test_a_refused_message_leaves_nothing_in_the_queue(store: Store, tmp_path: Path) -> None:
    refused = await intake(store, tmp_path).submit(
        Source(kind=SourceKind.SENDMAIL, principal="www-data"),
        parse_address("app@example.test"),
        [Recipient(parse_address("friend@remote.test"))],
        b"Subject: s\r\n\r\nfirst\r\n\x00.\r\nsecond\r\n",
        principal=Principal("www-data", ANY_SENDER),
    )
    assert refused == replies.NUL_IN_MESSAGE
    assert await store.messages(limit=10) == []
