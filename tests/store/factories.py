"""Messages, attempts and outcomes for the contract suite, and a held writer."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import AsyncIterator
from typing import Any

from postroom.ids import new_queue_id
from postroom.mail.address import Address
from postroom.mail.envelope import Envelope, Recipient, Source, SourceKind
from postroom.mail.spool import SpooledBody
from postroom.store import Store
from postroom.store.groupcommit import GroupCommitter
from postroom.store.models import Attempt, NewMessage, RecipientStatus, RecipientUpdate

NOW = 1_800_000_000.0
HEADER = b"Received: from client.example.net by mx.example.org; Thu, 1 Jan 2027 00:00:00 +0000\r\n"
SOURCE = Source(SourceKind.SMTP, client_ip="192.0.2.1", helo="client.example.net")
ALICE = Address("alice", "example.org")
BOB = Recipient(Address("bob", "example.net"))


def new_message(
    body: bytes = b"Subject: hi\r\n\r\nHello\r\n",
    *,
    message_id: str | None = None,
    at: float = NOW,
    header: bytes = HEADER,
    recipients: tuple[Recipient, ...] = (BOB,),
    sender: Address | None = ALICE,
    spool: SpooledBody | None = None,
) -> NewMessage:
    if spool is None:
        spool = SpooledBody()
        spool.write(body)
    return NewMessage(
        id=message_id or new_queue_id(at),
        envelope=Envelope(sender=sender, recipients=recipients),
        source=SOURCE,
        received_at=at,
        header=header,
        body=spool,
    )


def to(*addresses: str) -> tuple[Recipient, ...]:
    """Recipients from "local@domain" strings."""
    return tuple(Recipient(Address(*a.rsplit("@", 1))) for a in addresses)


def attempt(
    message_id: str,
    recipient: str,
    at: float,
    disposition: str = "delivered",
    *,
    mailer: str = "mx",
    code: int | None = 250,
    text: str = "2.0.0 Ok",
) -> Attempt:
    return Attempt(
        message_id=message_id,
        recipient=recipient,
        at=at,
        mailer=mailer,
        disposition=disposition,
        code=code,
        enhanced=text.split(" ", 1)[0] if code else None,
        text=text,
        host="mx1.example.net",
        ip="192.0.2.25",
        port=25,
        tls="TLSv1.3",
        provider_id=None,
        duration=0.25,
    )


def delivered(address: str) -> RecipientUpdate:
    return RecipientUpdate(address, RecipientStatus.DELIVERED, None, "250 2.0.0 Ok")


def deferred(address: str, next_at: float, *, warned: bool = False) -> RecipientUpdate:
    return RecipientUpdate(
        address, RecipientStatus.DEFERRED, next_at, "451 4.3.0 try later", delay_warned=warned
    )


def final(address: str, status: RecipientStatus) -> RecipientUpdate:
    return RecipientUpdate(address, status, None, "550 5.1.1 no such user")


@contextlib.asynccontextmanager
async def writer_held(committer: GroupCommitter[Any]) -> AsyncIterator[None]:
    """Keep the writer busy meanwhile, so what is submitted now forms the next batch."""
    entered, release = threading.Event(), threading.Event()

    def hold(conn: object) -> None:
        entered.set()
        release.wait(30)

    holder = asyncio.create_task(committer.submit(hold))
    await asyncio.to_thread(entered.wait, 30)
    try:
        yield
    finally:
        release.set()
        await holder


async def fill_log(store: Store) -> None:
    """Attempts over two hours by two mailers; recipients queued, deferred, held, final."""
    messages = [new_message(at=NOW + i * 700, recipients=to("a@x.example", "b@y.example"))
                for i in range(8)]  # fmt: skip
    for i, message in enumerate(messages):
        await store.enqueue(message)
        mailer = "mx" if i % 2 else "relay"
        rows = [attempt(message.id, "a@x.example", NOW + i * 700 + 5, mailer=mailer)]
        await store.record_outcomes(message.id, [delivered("a@x.example")], rows)
        if i % 3 == 0:
            await store.record_outcomes(message.id, [deferred("b@y.example", NOW + 9000)], [])
    assert await store.hold(messages[1].id)


class UnlinkedDsns:
    """Messages as a store made before DSNs kept their original's id: a DSN (its id in
    its delivery-status part only, after ``padding`` bytes of text), an alert (postroom's
    own mail, no original) and a message that quotes such a field; the upgrade links
    only the DSN."""

    def __init__(self, padding: int = 0) -> None:
        self.original = new_message(at=NOW)
        report = (
            b"Subject: Undelivered Mail Returned to Sender\r\n"
            b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n'
            b"\r\n--b\r\nContent-Type: text/plain\r\n\r\n" + b"x" * padding + b"\r\n"
            b"--b\r\nContent-Type: message/delivery-status\r\n\r\n"
            b"Reporting-MTA: dns; mx.example.org\r\n"
            b"X-Postroom-Queue-ID: " + self.original.id.encode() + b"\r\n\r\n"
            b"Final-Recipient: rfc822; bob@example.net\r\nAction: failed\r\n--b--\r\n"
        )
        own = Source(SourceKind.DSN, protocol="local")
        self.dsn = _from(new_message(report, at=NOW + 1, sender=None, recipients=(ALICE_TO,)), own)
        self.alert = _from(new_message(b"Subject: alert\r\n\r\nqueue\r\n", at=NOW + 2), own)
        quoted = b"Subject: see\r\n\r\nX-Postroom-Queue-ID: " + self.original.id.encode() + b"\r\n"
        self.quoting = new_message(quoted, at=NOW + 3)
        self.all = (self.original, self.dsn, self.alert, self.quoting)

    async def check(self, store: Store) -> None:
        """After the upgrade: the DSN is linked, the rest are not."""
        links = {}
        for message in self.all:
            stored = await store.message(message.id)
            assert stored is not None
            links[message.id] = stored.dsn_of
        wanted = {m.id: (self.original.id if m is self.dsn else None) for m in self.all}
        assert links == wanted, (links, wanted)


ALICE_TO = Recipient(ALICE)


def _from(message: NewMessage, source: Source) -> NewMessage:
    return dataclasses.replace(message, source=source)
