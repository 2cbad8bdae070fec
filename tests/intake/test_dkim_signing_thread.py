"""Where intake DKIM-signs: a small message on the event loop's thread once its keys
are parsed (a hop to a worker thread costs more than that signature), a large one, or
the first with a key (parsing it costs more than signing), in a worker thread."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from postroom.clock import SystemClock
from postroom.intake import Intake
from postroom.intake.principals import api_key_principal
from postroom.mail.address import parse_address
from postroom.mail.envelope import Recipient, Source, SourceKind
from postroom.mailauth.dkim import DkimSigner, KeyRing, Signature
from postroom.smtp.replies import Reply
from postroom.store.models import ApiKeyRecord
from postroom.store.sqlite import SqliteStore

SMALL = (
    b"From: app@example.test\r\nTo: friend@remote.test\r\nSubject: Receipt\r\n\r\n"
    b"Thanks for your order.\r\n"
)
LARGE = SMALL + b"A line of the order, long enough to fill the message up.\r\n" * 400


class _Recording(DkimSigner):
    """A signer that notes which thread each signature is made on."""

    def __init__(self, keys: KeyRing) -> None:
        super().__init__(keys)
        self.threads: list[int] = []

    def sign(self, message: bytes, now: float, *, domain: str) -> list[Signature]:
        self.threads.append(threading.get_ident())
        return super().sign(message, now, domain=domain)


async def _submit_each(tmp_path: Path, signer: DkimSigner, messages: list[bytes]) -> int:
    """Submit each message as an API key of example.test; the loop's thread."""
    store = SqliteStore(tmp_path / "postroom.db")
    await store.start()
    try:
        intake = Intake(
            store=store,
            clock=SystemClock(),
            hostname="mail.test",
            spool_dir=tmp_path / "spool",
            spool_memory=1024 * 1024,
            max_message_size=1024 * 1024,
            signer=signer,
        )
        principal = api_key_principal(ApiKeyRecord("key", "", "", ("example.test",), 0.0))
        source = Source(SourceKind.API, principal="key", protocol="HTTP")
        for data in messages:
            queued = await intake.submit(
                source,
                parse_address("app@example.test"),
                [Recipient(parse_address("friend@remote.test"))],
                data,
                principal=principal,
            )
            assert not isinstance(queued, Reply), queued
            body = await store.read_body(queued.queue_id)
            assert body is not None
            head = body.split(b"\r\n\r\n", 1)[0]
            assert b"\r\nDKIM-Signature: " in head
        return threading.get_ident()
    finally:
        await store.aclose()


def test_small_messages_are_signed_on_the_loop_once_the_key_is_parsed(tmp_path: Path) -> None:
    keys = KeyRing(tmp_path / "data")
    keys.generate("example.test", "r1", "rsa", 1024)
    signer = _Recording(keys)
    assert len(LARGE) > 16 * 1024
    loop = asyncio.run(_submit_each(tmp_path, signer, [SMALL, SMALL, LARGE, SMALL]))
    first, second, large, fourth = signer.threads
    assert first != loop  # the key is parsed with the first signature: off the loop
    assert second == loop
    assert large != loop
    assert fourth == loop


def test_a_key_replaced_on_disk_is_parsed_off_the_loop_again(tmp_path: Path) -> None:
    keys = KeyRing(tmp_path / "data")
    key = keys.generate("example.test", "r1", "rsa", 1024)
    signer = _Recording(keys)
    assert not signer.ready("example.test")
    assert signer.sign(SMALL, 0.0, domain="example.test")
    assert signer.ready("example.test")
    replacement = KeyRing(tmp_path / "other").generate("example.test", "r1", "rsa", 1024)
    key.path.write_bytes(replacement.path.read_bytes())
    stamp = key.path.stat().st_mtime_ns + 1_000_000  # a new time, whatever the clock's grain
    os.utime(key.path, ns=(stamp, stamp))
    assert not signer.ready("example.test")
    assert not signer.ready("nokeys.test")
