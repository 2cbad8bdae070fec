"""Quotas kept in Maildir++'s maildirsize: changes appended as lines, folders measured
only when the file asks for it (the Maildir++ rules Courier and Dovecot follow)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from postroom.mailbox import Maildir
from postroom.mailbox.account import MaildirAccount
from postroom.mailbox.base import DELETED, FlagChange, QuotaExceeded
from postroom.mailbox.quota import QUOTA_FILE, RECALCULATE_OVER, STALE_AFTER, read_quota_file
from tests.conftest import FakeClock

MESSAGE = b"From: Alice <alice@example.com>\r\nSubject: Lunch\r\n\r\nNoon?\r\n"
TRACE = b"Return-Path: <alice@example.com>\r\nDelivered-To: bob@example.test\r\n"
DELIVERED = len(TRACE + MESSAGE)


@pytest.fixture
def store(tmp_path: Path, fake_clock: FakeClock) -> Maildir:
    return Maildir(tmp_path / "mail", clock=fake_clock, hostname="mx1", poll_interval=0.05)


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every time the folders are measured (read whole), what it found."""
    found: list[tuple[int, int]] = []
    real = MaildirAccount._measure

    def counting(self: MaildirAccount) -> tuple[int, int]:
        result = real(self)
        found.append(result)
        return result

    monkeypatch.setattr(MaildirAccount, "_measure", counting)
    return found


def _deliver(store: Maildir) -> str:
    return store.deliver_sync(
        "example.test", "bob", MESSAGE, sender="alice@example.com", recipient="bob@example.test"
    )


def _bob(store: Maildir) -> MaildirAccount:
    return store.account("example.test", "bob")


def _file(store: Maildir) -> Path:
    return store.path("example.test", "bob") / QUOTA_FILE


async def test_deliveries_to_a_mailbox_with_a_quota_read_no_folder(
    store: Maildir, measured: list[tuple[int, int]]
) -> None:
    """Measured once when the limit first needs a total; after that every RCPT check and
    every delivery reads maildirsize alone, however full the mailbox."""
    account = _bob(store)
    await account.set_quota(100 * DELIVERED)
    _deliver(store)
    assert len(measured) == 1  # the file had no totals yet
    for _ in range(5):
        quota = await account.limited_quota()
        assert quota is not None
        _deliver(store)
    assert len(measured) == 1
    assert (await account.quota()).usage == 6 * DELIVERED
    assert len(measured) == 1


async def test_the_totals_stay_exact_across_deliver_append_copy_move_and_expunge(
    store: Maildir, measured: list[tuple[int, int]]
) -> None:
    account = _bob(store)
    await account.set_quota(1_000_000)
    _deliver(store)
    _deliver(store)
    await account.append("Sent", MESSAGE)
    await account.copy("INBOX", [1, 2], "Archive")
    await account.move("INBOX", [2], "Trash")
    await account.store("Archive", [1], [DELETED], FlagChange.ADD)
    await account.expunge("Archive")
    found = read_quota_file(_file(store))
    assert found is not None
    octets, messages = account._measure()
    # left: one message each in INBOX, Sent (appended: no trace fields), Archive, Trash
    assert (found.octets, found.messages) == (octets, messages) == (3 * DELIVERED + len(MESSAGE), 4)
    lines = _file(store).read_text().splitlines()
    assert lines[0] == "1000000S" and f"-{DELIVERED} -1" in lines


async def test_a_file_grown_past_5120_octets_is_measured_again_and_replaced(
    store: Maildir, measured: list[tuple[int, int]]
) -> None:
    account = _bob(store)
    _deliver(store)
    await account.set_quota(1_000_000)
    path = _file(store)
    # a tool that does not keep the file: lines that sum to nothing like the truth
    path.write_text("1000000S\n" + "7 1\n" * (RECALCULATE_OVER // 4 + 1))
    quota = await account.quota()
    assert quota.usage == DELIVERED and len(measured) == 1
    assert path.read_text() == f"1000000S\n{DELIVERED} 1\n"  # as Courier and Dovecot write it


@pytest.mark.parametrize(
    "content",
    [
        "1000000S\n",  # a limit without totals
        "1000000S\n100 1\n-500 -2\n",  # less than nothing
    ],
)
async def test_a_file_without_trustworthy_totals_is_measured_again(
    store: Maildir, measured: list[tuple[int, int]], content: str
) -> None:
    account = _bob(store)
    _deliver(store)
    _file(store).write_text(content)
    assert (await account.quota()).usage == DELIVERED
    assert len(measured) == 1


async def test_an_account_over_its_limit_is_measured_again_once_the_file_is_stale(
    store: Maildir, measured: list[tuple[int, int]]
) -> None:
    """mutt deletes a file without writing maildirsize: an account that looks full is
    measured again after 15 minutes (Maildir++), so it does not stay refused."""
    account = _bob(store)
    _deliver(store)
    path = _file(store)
    path.write_text(f"{2 * DELIVERED}S\n{3 * DELIVERED} 3\n")
    with pytest.raises(QuotaExceeded):
        account.check_room(1)
    assert measured == []
    past = os.stat(path).st_mtime - STALE_AFTER - 1
    os.utime(path, (past, past))
    account.check_room(DELIVERED)  # one more fits beside the one it holds
    assert len(measured) == 1
    assert path.read_text() == f"{2 * DELIVERED}S\n{DELIVERED} 1\n"


async def test_a_mailbox_on_the_default_quota_keeps_its_totals_without_an_own_limit(
    tmp_path: Path, measured: list[tuple[int, int]]
) -> None:
    store = Maildir(tmp_path / "mail", hostname="mx1", default_quota=10 * DELIVERED)
    for _ in range(3):
        _deliver(store)
    quota = await _bob(store).quota()
    assert (quota.limit, quota.usage, quota.own) == (10 * DELIVERED, 3 * DELIVERED, False)
    assert _file(store).read_text().splitlines()[0] == ""  # no limit of its own
    # before the first delivery there was no mailbox to keep a file in; then one look
    assert measured == [(0, 0), (DELIVERED, 1)]
