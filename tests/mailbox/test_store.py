"""The mailbox store behind POP3 and IMAP: folders, UIDs, flags, on real Maildir files."""

from __future__ import annotations

import asyncio
import contextlib
import io
import mailbox
import os
import threading
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postroom.mailbox import MailAccount, MailboxStore, Maildir
from postroom.mailbox import folder as folder_module
from postroom.mailbox.account import MaildirAccount
from postroom.mailbox.base import (
    DELETED,
    FLAGGED,
    SEEN,
    FlagChange,
    FolderChanges,
    FolderExists,
    MailboxError,
    NoSuchFolder,
    Quota,
    QuotaExceeded,
    SpecialUse,
    TooManyKeywords,
)
from postroom.mailbox.folder import FolderFiles
from postroom.mailbox.message import MessageFile, to_crlf
from postroom.mailbox.names import decode_mutf7, dir_name, encode_mutf7, folder_name
from postroom.mailbox.uidlist import (
    LOCK_FILE,
    UIDLIST_FILE,
    UidListLock,
    read_uidlist,
    uidlist_lock,
)
from tests.conftest import FakeClock

MESSAGE = b"From: Alice <alice@example.com>\r\nSubject: Lunch\r\n\r\nNoon?\r\n"
TRACE = b"Return-Path: <alice@example.com>\r\nDelivered-To: bob@example.test\r\n"


@pytest.fixture
def store(tmp_path: Path, fake_clock: FakeClock) -> Maildir:
    return Maildir(tmp_path / "mail", clock=fake_clock, hostname="mx1", poll_interval=0.05)


def _deliver(store: Maildir, data: bytes = MESSAGE) -> str:
    return store.deliver_sync(
        "example.test", "bob", data, sender="alice@example.com", recipient="bob@example.test"
    )


def _bob(store: Maildir) -> MailAccount:
    return store.account("example.test", "bob")


async def _read(account: MailAccount, folder: str, uid: int) -> bytes:
    message = await account.open_message(folder, uid)
    assert message is not None
    with message:
        out = b""
        while chunk := message.read(7):  # small chunks: the CRLF seams are crossed
            out += chunk
    return out


def test_maildir_is_a_mailbox_store(store: Maildir) -> None:
    assert isinstance(store, Maildir)
    typed: MailboxStore = store
    account: MailAccount = typed.account("example.test", "bob")
    assert account.user == "bob"


async def test_a_delivered_message_reads_back_byte_for_byte_with_its_size(store: Maildir) -> None:
    _deliver(store)
    status, messages = await _bob(store).messages("INBOX")
    assert [m.uid for m in messages] == [1]
    data = await _read(_bob(store), "INBOX", 1)
    assert data == TRACE + MESSAGE
    assert messages[0].size == len(data) == status.size
    assert status.messages == 1 and status.unseen == 1 and status.uidnext == 2


async def test_uids_and_uidvalidity_survive_a_restart(store: Maildir, tmp_path: Path) -> None:
    for _ in range(3):
        _deliver(store)
    first, messages = await _bob(store).messages("INBOX")
    again = Maildir(tmp_path / "mail", hostname="mx1")
    second, after = await again.account("example.test", "bob").messages("INBOX")
    assert second.uidvalidity == first.uidvalidity
    assert [m.uid for m in after] == [m.uid for m in messages] == [1, 2, 3]


async def test_uids_are_never_reused_after_an_expunge(store: Maildir) -> None:
    account = _bob(store)
    _deliver(store)
    _deliver(store)
    await account.store("INBOX", [2], [DELETED], FlagChange.ADD)
    assert await account.expunge("INBOX") == [2]
    _deliver(store)
    _, messages = await account.messages("INBOX")
    assert [m.uid for m in messages] == [1, 3]


async def test_default_folders_are_made_with_their_special_use_and_subscribed(
    store: Maildir,
) -> None:
    folders = await _bob(store).folders()
    assert [(f.name, f.special_use, f.subscribed) for f in folders] == [
        ("INBOX", None, False),
        ("Archive", SpecialUse.ARCHIVE, True),
        ("Drafts", SpecialUse.DRAFTS, True),
        ("Junk", SpecialUse.JUNK, True),
        ("Sent", SpecialUse.SENT, True),
        ("Trash", SpecialUse.TRASH, True),
    ]
    maildir = store.path("example.test", "bob")
    assert (maildir / ".Sent" / "maildirfolder").is_file()  # Maildir++, as Dovecot lays it out


async def test_flags_live_in_the_file_name_as_mutt_and_dovecot_write_them(
    store: Maildir,
) -> None:
    _deliver(store)
    account = _bob(store)
    result = await account.store("INBOX", [1], [SEEN, FLAGGED, "$Forwarded"], FlagChange.ADD)
    assert result.changed[0].flags == {SEEN, FLAGGED, "$Forwarded"}
    maildir = store.path("example.test", "bob")
    [name] = os.listdir(maildir / "cur")
    assert name.endswith(":2,FSa")
    assert (maildir / "dovecot-keywords").read_text() == "0 $Forwarded\n"
    # Python's own Maildir reader (an independent one) sees the same flags.
    [message] = mailbox.Maildir(maildir, factory=None, create=False)
    assert isinstance(message, mailbox.MaildirMessage)
    assert set(message.get_flags()) == {"F", "S", "a"}
    removed = await account.store("INBOX", [1], [SEEN], FlagChange.REMOVE)
    assert removed.changed[0].flags == {FLAGGED, "$Forwarded"}


async def test_a_flag_change_by_another_tool_is_seen(store: Maildir) -> None:
    _deliver(store)
    account = _bob(store)
    await account.messages("INBOX")  # moves it to cur/
    maildir = mailbox.Maildir(store.path("example.test", "bob"), factory=None, create=False)
    key = next(iter(maildir.keys()))
    message = maildir[key]
    assert isinstance(message, mailbox.MaildirMessage)
    message.set_flags("RS")
    maildir[key] = message
    _, [info] = await account.messages("INBOX")
    assert info.flags == {SEEN, "\\Answered"}
    assert info.uid == 1


async def test_modseq_grows_with_each_change_and_unchangedsince_refuses(store: Maildir) -> None:
    _deliver(store)
    account = _bob(store)
    before = await account.status("INBOX")
    changed = await account.store("INBOX", [1], [SEEN], FlagChange.ADD)
    assert changed.changed[0].modseq > before.highestmodseq
    refused = await account.store(
        "INBOX", [1], [FLAGGED], FlagChange.ADD, unchanged_since=before.highestmodseq
    )
    assert refused.failed == (1,) and refused.changed == ()


async def test_append_keeps_flags_and_date_and_reads_back_crlf(store: Maildir) -> None:
    account = _bob(store)
    result = await account.append("Drafts", MESSAGE, flags=[SEEN], internal_date=1_700_000_000.0)
    _, [info] = await account.messages("Drafts")
    assert (info.uid, info.flags, info.internal_date) == (
        result.uid,
        frozenset({SEEN}),
        1_700_000_000.0,
    )
    assert await _read(account, "Drafts", result.uid) == MESSAGE
    assert info.size == len(MESSAGE)


async def test_copy_and_move_answer_copyuid_and_keep_flags(store: Maildir) -> None:
    account = _bob(store)
    _deliver(store)
    _deliver(store)
    await account.store("INBOX", [1], [FLAGGED], FlagChange.ADD)
    copied = await account.copy("INBOX", [1, 2, 99], "Archive")
    assert (copied.source_uids, copied.target_uids) == ((1, 2), (1, 2))
    assert copied.uidvalidity == (await account.status("Archive")).uidvalidity
    moved = await account.move("INBOX", [2], "Trash")
    assert moved.target_uids == (1,)
    _, inbox = await account.messages("INBOX")
    _, archive = await account.messages("Archive")
    assert [m.uid for m in inbox] == [1]
    assert archive[0].flags == {FLAGGED}
    assert await _read(account, "Trash", 1) == TRACE + MESSAGE


async def test_uid_expunge_removes_only_the_given_deleted_messages(store: Maildir) -> None:
    account = _bob(store)
    for _ in range(3):
        _deliver(store)
    await account.store("INBOX", [1, 2], [DELETED], FlagChange.ADD)
    assert await account.expunge("INBOX", [2, 3]) == [2]
    _, messages = await account.messages("INBOX")
    assert [m.uid for m in messages] == [1, 3]


async def test_folders_are_created_renamed_with_children_and_deleted(store: Maildir) -> None:
    account = _bob(store)
    await account.create_folder("Projects")
    await account.create_folder("Projects/v1.2 Über")
    with pytest.raises(FolderExists):
        await account.create_folder("Projects")
    await account.subscribe("Projects/v1.2 Über")
    await account.rename_folder("Projects", "Work")
    folders = {f.name: f for f in await account.folders()}
    assert "Work/v1.2 Über" in folders and "Projects" not in folders
    assert folders["Work/v1.2 Über"].subscribed and folders["Work"].has_children
    maildir = store.path("example.test", "bob")
    assert (maildir / ".Work.v1&AC4-2 &ANw-ber").is_dir()  # modified UTF-7 on disk
    await account.delete_folder("Work/v1.2 Über")
    assert "Work/v1.2 Über" not in {f.name for f in await account.folders()}
    with pytest.raises(NoSuchFolder):
        await account.status("Work/v1.2 Über")
    with pytest.raises(MailboxError):
        await account.delete_folder("inbox")


async def test_usage_counts_every_folder(store: Maildir) -> None:
    account = _bob(store)
    _deliver(store)
    await account.append("Sent", MESSAGE)
    assert await account.usage() == len(TRACE + MESSAGE) + len(MESSAGE)


async def test_a_message_another_tool_drops_into_new_gets_the_next_uid(store: Maildir) -> None:
    _deliver(store)
    account = _bob(store)
    await account.messages("INBOX")
    maildir = mailbox.Maildir(store.path("example.test", "bob"), factory=None, create=False)
    maildir.add(b"Subject: by hand\n\nhi\n")
    _, messages = await account.messages("INBOX")
    assert [m.uid for m in messages] == [1, 2]
    assert await _read(account, "INBOX", 2) == b"Subject: by hand\r\n\r\nhi\r\n"
    assert messages[1].size == len(b"Subject: by hand\r\n\r\nhi\r\n")


def test_concurrent_appenders_in_separate_stores_never_share_a_uid(tmp_path: Path) -> None:
    """Each thread has its own Maildir object, as separate processes would: only the
    dot-lock keeps them apart."""
    errors: list[BaseException] = []

    def append_many() -> None:
        own = Maildir(tmp_path / "mail", hostname="mx1")
        try:
            for _ in range(15):
                asyncio.run(own.account("example.test", "bob").append("INBOX", MESSAGE))
                own.deliver_sync(
                    "example.test", "bob", MESSAGE, sender="a@example.com", recipient="b@x.test"
                )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=append_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    reader = Maildir(tmp_path / "mail", hostname="mx1")
    _, messages = asyncio.run(reader.account("example.test", "bob").messages("INBOX"))
    assert [m.uid for m in messages] == list(range(1, 121))
    uidlist = read_uidlist(reader.path("example.test", "bob") / UIDLIST_FILE)
    assert uidlist is not None and uidlist.uidnext == 121


async def test_a_lock_left_by_a_dead_process_is_broken(store: Maildir) -> None:
    maildir = store.path("example.test", "bob")
    store.ensure_maildir(maildir)
    (maildir / "new" / "1700000000.M1P1.other").write_bytes(MESSAGE)  # left by another tool
    (maildir / LOCK_FILE).write_text("")
    os.utime(maildir / LOCK_FILE, (1.0, 1.0))
    _, messages = await _bob(store).messages("INBOX")
    assert [m.uid for m in messages] == [1]
    assert not (maildir / LOCK_FILE).exists()


async def test_a_damaged_uidlist_is_remade_with_a_new_uidvalidity(
    store: Maildir, fake_clock: FakeClock
) -> None:
    _deliver(store)
    first = await _bob(store).status("INBOX")
    (store.path("example.test", "bob") / UIDLIST_FILE).write_text("garbage\n")
    fake_clock.now += 10
    again = Maildir(store.root, clock=fake_clock, hostname="mx1")
    second = await again.account("example.test", "bob").status("INBOX")
    assert second.uidvalidity != first.uidvalidity and second.messages == 1


async def test_a_delivery_wakes_a_watcher_in_the_same_process(store: Maildir) -> None:
    account = _bob(store)
    async with account.watch("INBOX") as watch:
        await asyncio.to_thread(_deliver, store)
        async with asyncio.timeout(1):
            await watch.wait()


async def test_a_delivery_by_another_process_wakes_a_watcher_by_the_poll(
    store: Maildir, tmp_path: Path
) -> None:
    account = _bob(store)
    await account.messages("INBOX")
    other = Maildir(tmp_path / "mail", hostname="mx2")  # another process's store
    async with account.watch("INBOX") as watch:
        await asyncio.to_thread(_deliver, other)
        # The poll runs each second; the bound is only against a hang (a loaded host can
        # delay one round past a second).
        async with asyncio.timeout(10):
            await watch.wait()


async def test_accounts_lists_every_user_with_a_maildir(store: Maildir) -> None:
    _deliver(store)
    await store.account("example.org", "carol").folders()
    assert await store.accounts() == [("example.org", "carol"), ("example.test", "bob")]


async def test_too_many_keywords_is_refused(store: Maildir) -> None:
    _deliver(store)
    account = _bob(store)
    await account.store("INBOX", [1], [f"k{i}" for i in range(26)], FlagChange.ADD)
    with pytest.raises(TooManyKeywords):
        await account.store("INBOX", [1], ["one-more"], FlagChange.ADD)


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=40))
def test_a_message_file_reads_back_crlf_whatever_the_chunking(data: bytes, size: int) -> None:
    reader = MessageFile(io.BytesIO(data))
    out = b""
    while chunk := reader.read(size):
        out += chunk
    assert out == to_crlf(data)


@given(st.text(min_size=1, max_size=30).filter(lambda t: "/" not in t))
def test_modified_utf7_round_trips(text: str) -> None:
    assert decode_mutf7(encode_mutf7(text, also=".")) == text


def test_folder_directories_round_trip() -> None:
    for name in ("Sent", "Archive/2026", "Ünïcode & more", "a.b/c"):
        assert folder_name(dir_name(name)) == name
    assert dir_name("inbox") == ""
    assert encode_mutf7("~peter/mail/台北/日本語") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"


async def test_quota_is_the_default_until_set_and_kept_in_maildirsize(tmp_path: Path) -> None:
    store = Maildir(tmp_path / "mail", hostname="mx1", default_quota=10_000)
    account = store.account("example.test", "bob")
    assert await account.quota() == Quota(limit=10_000, usage=0, own=False)
    assert not store.path("example.test", "bob").exists()  # asking made nothing
    await account.set_quota(5_000)
    assert (store.path("example.test", "bob") / "maildirsize").read_text() == "5000S\n"
    await account.append("INBOX", MESSAGE)
    assert await account.quota() == Quota(limit=5_000, usage=len(MESSAGE), own=True)
    await account.set_quota(None)
    assert (await account.quota()).limit == 10_000


async def test_a_full_mailbox_refuses_delivery_append_and_copy(store: Maildir) -> None:
    account = _bob(store)
    _deliver(store)
    await account.set_quota(len(TRACE + MESSAGE) + 10)
    with pytest.raises(QuotaExceeded):
        _deliver(store)
    with pytest.raises(QuotaExceeded):
        await account.append("Drafts", MESSAGE)
    with pytest.raises(QuotaExceeded):
        await account.copy("INBOX", [1], "Archive")
    await account.move("INBOX", [1], "Archive")  # a move takes no more room
    assert (await account.status("Archive")).messages == 1


async def test_a_mailbox_without_a_limit_is_never_measured_to_take_mail(
    store: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measuring reads every file of every folder: done for every delivery, it made
    local delivery quadratic in the mailbox's size. Without a limit nothing is read."""
    account = _bob(store)
    measured: list[tuple[int, int]] = []
    real = MaildirAccount._measure

    def counting(self: MaildirAccount) -> tuple[int, int]:
        usage = real(self)
        measured.append(usage)
        return usage

    monkeypatch.setattr(MaildirAccount, "_measure", counting)
    for _ in range(3):
        _deliver(store)
    assert await account.limited_quota() is None
    assert measured == []
    # Asked for, it is measured; and a limit makes delivery measure again.
    assert (await account.quota()).usage == 3 * len(TRACE + MESSAGE)
    await account.set_quota(10 * len(TRACE + MESSAGE))
    _deliver(store)
    limited = await account.limited_quota()
    assert limited is not None and limited.usage == 4 * len(TRACE + MESSAGE)


def _fill(maildir: Path, count: int, *, sub: str = "cur", first: int = 1_700_000_000) -> list[str]:
    """``count`` messages as another tool leaves them (sizes and times in the names)."""
    for folder in ("tmp", "new", "cur"):
        (maildir / folder).mkdir(parents=True, exist_ok=True)
    names = []
    for n in range(count):
        data = b"Subject: %d\n\nbody\n" % n
        base = f"{first + n}.M{n}P1Q{n}.other,S={len(data)},W={len(to_crlf(data))}"
        names.append(base)
        (maildir / sub / (base + (":2,S" if sub == "cur" else ""))).write_bytes(data)
    return names


async def test_a_first_look_numbers_a_folder_without_opening_or_stating_a_message(
    store: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Numbering reads the names alone (their times give the order, their W= the size):
    a stat or an open per file made the first SELECT of a large folder take seconds."""
    maildir = store.path("example.test", "bob")
    names = _fill(maildir, 200)
    touched: list[str] = []
    real_stat, real_open = os.stat, open

    def stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        touched.append(str(path))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    def open_(path: object, *args: object, **kwargs: object) -> object:
        touched.append(str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr("builtins.open", open_)
    _, messages = await _bob(store).messages("INBOX")
    assert [m.uid for m in messages] == list(range(1, 201))
    # the times the names begin with: 1700000001.M1 is a microsecond past the second
    assert [m.internal_date for m in messages[:2]] == [1_700_000_000, 1_700_000_001.000001]
    assert not [path for path in touched if "/cur/" in path or "/new/" in path]
    uidlist = read_uidlist(maildir / UIDLIST_FILE)
    assert uidlist is not None and [r.base for r in uidlist.records] == names


async def test_deliveries_take_no_lock_and_the_next_look_numbers_them_in_one_append(
    store: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery writes its file and nothing else (the dot-lock's file costs as much as
    the message's own); the next look numbers all delivered since with one lock and one
    append (the same list file, grown), and another process reads the same UIDs."""
    account = _bob(store)
    _deliver(store)
    await account.messages("INBOX")
    listed = store.path("example.test", "bob") / UIDLIST_FILE
    before = listed.stat()
    locks: list[Path] = []

    def counting(path: Path, **kwargs: float) -> AbstractContextManager[UidListLock]:
        locks.append(path)
        return uidlist_lock(path, **kwargs)

    monkeypatch.setattr(folder_module, "uidlist_lock", counting)
    names = [_deliver(store, b"Subject: %d\n\nx\n" % n) for n in range(8)]
    assert locks == [] and listed.stat().st_size == before.st_size
    _, here = await account.messages("INBOX")
    assert len(locks) == 1
    after = listed.stat()
    assert after.st_ino == before.st_ino and after.st_size > before.st_size
    assert [line.rsplit(" :", 1)[1] for line in listed.read_text().splitlines()[-8:]] == names
    locks.clear()
    again = Maildir(store.root, hostname="mx1")  # another process reads the list whole
    _, messages = await again.account("example.test", "bob").messages("INBOX")
    assert [m.uid for m in messages] == [m.uid for m in here] == list(range(1, 10))
    assert locks == []


async def test_a_list_line_cut_short_is_not_read_and_the_next_writer_rewrites_the_list(
    store: Maildir,
) -> None:
    _deliver(store)
    account = _bob(store)
    await account.messages("INBOX")
    listed = store.path("example.test", "bob") / UIDLIST_FILE
    # a writer died mid-line
    listed.write_text(listed.read_text() + "2 W40 M9 :1700000000.M1P1.half")
    again = Maildir(store.root, hostname="mx1")
    _, messages = await again.account("example.test", "bob").messages("INBOX")
    assert [m.uid for m in messages] == [1]
    _deliver(again)
    _, messages = await again.account("example.test", "bob").messages("INBOX")
    assert [m.uid for m in messages] == [1, 2]  # the look that numbered it rewrote the list
    text = listed.read_text()
    assert text.endswith("\n") and "half" not in text


async def test_changes_tell_what_changed_since_a_look(store: Maildir) -> None:
    account = _bob(store)
    for _ in range(3):
        _deliver(store)
    first, _ = await account.messages("INBOX")
    assert await account.changes("INBOX", first.version) == FolderChanges(
        first.version, (), (), (), (await account.messages("INBOX"))[1]
    )
    await account.store("INBOX", [1], [SEEN], FlagChange.ADD)
    await account.store("INBOX", [2], [DELETED], FlagChange.ADD)
    await account.expunge("INBOX")
    _deliver(store)
    changes = await account.changes("INBOX", first.version)
    assert changes is not None
    assert changes.expunged == (2,)
    assert [(m.uid, m.flags) for m in changes.changed] == [(1, frozenset({SEEN}))]
    assert [m.uid for m in changes.added] == [4]
    _, now = await account.messages("INBOX")
    assert changes.messages == now and [m.uid for m in now] == [1, 3, 4]
    assert await account.changes("INBOX", -1) is None  # unknown: ask for messages() again


async def test_one_look_serves_every_session_watching_a_folder(
    store: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watch looks once per change and the woken sessions ask for what changed
    since their view: one build of the folder's look however many are watching."""
    account = _bob(store)
    _deliver(store)
    status, _ = await account.messages("INBOX")
    builds: list[int] = []
    real = FolderFiles._build

    def counting(self: FolderFiles) -> folder_module.Snapshot:
        builds.append(1)
        return real(self)

    monkeypatch.setattr(FolderFiles, "_build", counting)
    async with contextlib.AsyncExitStack() as stack:
        watches = [await stack.enter_async_context(account.watch("INBOX")) for _ in range(20)]
        await asyncio.to_thread(_deliver, store)
        async with asyncio.timeout(2):
            for watch in watches:
                await watch.wait()
        answers = [
            await account.changes("INBOX", status.version, looked=watch.version)
            for watch in watches
        ]
    assert all(a is not None and [m.uid for m in a.added] == [2] for a in answers)
    assert len(builds) == 1


async def test_a_new_message_another_tool_deletes_is_expunged_at_the_next_look(
    store: Maildir,
) -> None:
    """A look after a delivery reads new/ alone; a message gone from there is gone."""
    account = _bob(store)
    _deliver(store)
    name = _deliver(store)
    first, _ = await account.messages("INBOX")
    (store.path("example.test", "bob") / "new" / name).unlink()  # as mutt's delete would
    _, messages = await account.messages("INBOX")
    assert [m.uid for m in messages] == [1]
    changes = await account.changes("INBOX", first.version)
    assert changes is not None and changes.expunged == (2,)
