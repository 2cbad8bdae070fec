"""The local mailer: one Maildir copy per recipient, outcomes for everything, never raises."""

from __future__ import annotations

import errno
import mailbox
from pathlib import Path

import pytest

from postroom.config.mailers import LocalMailerSettings
from postroom.delivery.mailers import Mailer
from postroom.delivery.mailers.mta.local import (
    DELIVERED,
    DISK_ERRORS,
    UNSAFE_MAILBOX,
    LocalMailer,
    mailbox_key,
)
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Disposition
from tests.conftest import FakeClock

DATA = b"From: alice@example.com\r\nSubject: Hello\r\n\r\nHi there\r\n"


def _message(sender: str = "alice@example.com") -> OutboundMessage:
    return OutboundMessage(id="01HXAMPLE0000000", sender=sender, data=DATA)


def _rcpts(*addresses: str) -> list[OutboundRecipient]:
    return [OutboundRecipient(address) for address in addresses]


class BrokenStore:
    """A MailDrop whose disk fails in a chosen way."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.calls = 0

    async def deliver(
        self, domain: str, user: str, data: bytes, *, sender: str, recipient: str
    ) -> str:
        self.calls += 1
        raise self.exc


@pytest.fixture
def mailer(tmp_path: Path, fake_clock: FakeClock) -> LocalMailer:
    return LocalMailer(LocalMailerSettings(name="inbox"), data_dir=tmp_path, clock=fake_clock)


def _box(tmp_path: Path, domain: str, user: str) -> mailbox.Maildir:
    return mailbox.Maildir(tmp_path / "mail" / domain / user / "Maildir", create=False)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_is_a_mailer(mailer: LocalMailer) -> None:
    checked: Mailer = mailer
    assert checked.name == "inbox"


async def test_each_recipient_gets_its_own_copy(mailer: LocalMailer, tmp_path: Path) -> None:
    outcomes = await mailer.deliver(_message(), _rcpts("bob@example.test", "carol@example.test"))
    assert [o.recipient for o in outcomes] == ["bob@example.test", "carol@example.test"]
    for outcome, user in zip(outcomes, ["bob", "carol"], strict=True):
        assert outcome.disposition is Disposition.DELIVERED
        assert outcome.reply == DELIVERED
        assert str(outcome.reply) == "250 2.0.0 Delivered to maildir"
        assert not outcome.failover
        assert outcome.remote is not None
        assert outcome.remote.mailer == "inbox"
        box = _box(tmp_path, "example.test", user)
        assert list(box.keys()) == [outcome.remote.provider_id]  # the stored file's name
        (message,) = box.values()
        assert message["Delivered-To"] == f"{user}@example.test"
        assert message["Return-Path"] == "<alice@example.com>"
        assert message["Subject"] == "Hello"
        assert message.get_payload() == "Hi there\n"


async def test_null_sender_is_kept(mailer: LocalMailer, tmp_path: Path) -> None:
    await mailer.deliver(_message(sender=""), _rcpts("bob@example.test"))
    (message,) = _box(tmp_path, "example.test", "bob").values()
    assert message["Return-Path"] == "<>"


@pytest.mark.parametrize(
    ("address", "domain", "user"),
    [
        ("Bob@Example.TEST", "example.test", "bob"),
        ("BOB.Smith+Tag@example.test", "example.test", "bob.smith+tag"),
        ("info@bücher.example", "xn--bcher-kva.example", "info"),
        ("Jörg@example.test", "example.test", "jörg"),
    ],
)
async def test_mailbox_is_named_by_lowercased_local_part_and_a_label_domain(
    mailer: LocalMailer, tmp_path: Path, address: str, domain: str, user: str
) -> None:
    assert mailbox_key(address) == (domain, user)
    (outcome,) = await mailer.deliver(_message(), _rcpts(address))
    assert outcome.disposition is Disposition.DELIVERED
    box = _box(tmp_path, domain, user)
    (key,) = box.keys()
    # The recipient as given (UTF-8 in the header, RFC 6532).
    assert f"Delivered-To: {address}\n".encode() in box.get_bytes(key)


@pytest.mark.parametrize(
    "address",
    [
        "a/b@example.test",  # "/" is atext: valid mail, but it would make a subfolder
        "../../etc@example.test",
        '"../x"@example.test',
        "not-an-address",
        "@example.test",
    ],
)
async def test_path_tricks_and_bad_addresses_bounce_with_5_1_3(
    mailer: LocalMailer, tmp_path: Path, address: str
) -> None:
    (outcome,) = await mailer.deliver(_message(), _rcpts(address))
    assert outcome.disposition is Disposition.BOUNCED
    assert outcome.reply == UNSAFE_MAILBOX
    assert (outcome.reply.code, outcome.reply.enhanced) == (553, "5.1.3")
    assert outcome.recipient == address
    # Nothing was written anywhere, inside the mail folder or out of it.
    assert _names(tmp_path) == []


async def test_quoted_dots_stay_inside_the_domain_folder(
    mailer: LocalMailer, tmp_path: Path
) -> None:
    # The quotes are part of the local part, so the folders are '".."' and '".hidden"'.
    outcomes = await mailer.deliver(_message(), _rcpts('".."@example.test', '".hidden"@x.test'))
    assert [o.disposition for o in outcomes] == [Disposition.DELIVERED] * 2
    assert len(_box(tmp_path, "example.test", '".."')) == 1
    assert len(_box(tmp_path, "x.test", '".hidden"')) == 1
    assert _names(tmp_path / "mail") == ["example.test", "x.test"]


async def test_one_bad_recipient_does_not_stop_the_others(
    mailer: LocalMailer, tmp_path: Path
) -> None:
    outcomes = await mailer.deliver(
        _message(), _rcpts("a/b@example.test", "bob@example.test", "x@example.test")
    )
    assert [o.disposition for o in outcomes] == [
        Disposition.BOUNCED,
        Disposition.DELIVERED,
        Disposition.DELIVERED,
    ]


@pytest.mark.parametrize(
    ("exc", "code", "enhanced"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), 452, "4.3.1"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), 452, "4.2.2"),
        (OSError(errno.EACCES, "Permission denied"), 451, "4.3.0"),
        (OSError(errno.EIO, "Input/output error"), 451, "4.3.0"),
        (OSError("no errno at all"), 451, "4.3.0"),
        (RuntimeError("a bug"), 451, "4.3.0"),
    ],
)
async def test_disk_trouble_defers_and_never_raises(
    tmp_path: Path, fake_clock: FakeClock, exc: BaseException, code: int, enhanced: str
) -> None:
    store = BrokenStore(exc)
    mailer = LocalMailer(
        LocalMailerSettings(name="local"), data_dir=tmp_path, clock=fake_clock, mailbox=store
    )
    outcomes = await mailer.deliver(_message(), _rcpts("bob@example.test", "carol@example.test"))
    assert store.calls == 2
    for outcome in outcomes:
        assert outcome.disposition is Disposition.DEFERRED
        assert (outcome.reply.code, outcome.reply.enhanced) == (code, enhanced)
        assert not outcome.failover
        assert outcome.remote is not None
        assert outcome.remote.provider_id is None
    if isinstance(exc, OSError) and exc.strerror:
        assert outcomes[0].reply.lines[-1].endswith(f": {exc.strerror}")


def test_disk_error_table_names_enospc() -> None:
    assert DISK_ERRORS[errno.ENOSPC].enhanced == "4.3.1"


async def test_a_real_disk_error_defers_without_leaking_the_path(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    (tmp_path / "mail").write_text("a file where the mail folder should be")
    mailer = LocalMailer(LocalMailerSettings(name="local"), data_dir=tmp_path, clock=fake_clock)
    (outcome,) = await mailer.deliver(_message(), _rcpts("bob@example.test"))
    assert outcome.disposition is Disposition.DEFERRED
    assert (outcome.reply.code, outcome.reply.enhanced) == (451, "4.3.0")
    assert str(tmp_path) not in str(outcome.reply)


async def test_duration_comes_from_the_clock(tmp_path: Path, fake_clock: FakeClock) -> None:
    class SlowStore:
        async def deliver(
            self, domain: str, user: str, data: bytes, *, sender: str, recipient: str
        ) -> str:
            fake_clock.advance(2.5)
            return "name"

    mailer = LocalMailer(
        LocalMailerSettings(name="local"), data_dir=tmp_path, clock=fake_clock, mailbox=SlowStore()
    )
    (outcome,) = await mailer.deliver(_message(), _rcpts("bob@example.test"))
    assert outcome.duration == 2.5
    assert outcome.remote is not None
    assert outcome.remote.provider_id == "name"


async def test_no_recipients_no_outcomes_and_aclose_is_harmless(mailer: LocalMailer) -> None:
    assert await mailer.deliver(_message(), []) == []
    await mailer.aclose()
    await mailer.aclose()
