"""Maildir delivery, read back with Python's own ``mailbox.Maildir`` (an independent reader)."""

from __future__ import annotations

import asyncio
import errno
import mailbox
import os
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from postroom.mailbox import MailboxStore, Maildir, check_folder_name
from tests.conftest import FakeClock

MESSAGE = (
    b"Received: from client.example (client.example [192.0.2.1])\r\n"
    b"\tby mail.example.test (postroom) with ESMTP id 01ABC;\r\n"
    b"\tFri, 15 Jan 2027 08:00:00 +0000\r\n"
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.test>\r\n"
    b"Subject: Lunch\r\n"
    b"\r\n"
    b"Noon at the usual place?\r\n"
    b"-- \r\n"
    b"Alice\r\n"
)
NAME = re.compile(
    r"(?P<sec>\d+)\.M(?P<usec>\d+)P(?P<pid>\d+)Q(?P<q>\d+)R[0-9a-f]{8}\.(?P<host>[^,/:]+)"
    r",S=(?P<size>\d+),W=(?P<vsize>\d+)"
)


@pytest.fixture
def maildir(tmp_path: Path, fake_clock: FakeClock) -> Maildir:
    return Maildir(tmp_path / "mail", clock=fake_clock, hostname="mx1.example.test")


def _read(path: Path) -> mailbox.Maildir:
    return mailbox.Maildir(path, factory=None, create=False)


def _deliver(maildir: Maildir, data: bytes = MESSAGE, **kwargs: str) -> str:
    return maildir.deliver_sync(
        kwargs.get("domain", "example.test"),
        kwargs.get("user", "bob"),
        data,
        sender=kwargs.get("sender", "alice@example.com"),
        recipient=kwargs.get("recipient", "bob@example.test"),
    )


def test_is_a_mailbox_store(maildir: Maildir) -> None:
    store: MailboxStore = maildir
    assert store is maildir


async def test_delivered_message_reads_back_with_trace_headers_first(maildir: Maildir) -> None:
    name = await maildir.deliver(
        "example.test", "bob", MESSAGE, sender="alice@example.com", recipient="bob@example.test"
    )
    box = _read(maildir.path("example.test", "bob"))
    assert list(box.keys()) == [name]
    message = box[name]
    assert message.get_subdir() == "new"
    assert message["Return-Path"] == "<alice@example.com>"
    assert message["Delivered-To"] == "bob@example.test"
    assert message["Subject"] == "Lunch"
    assert message["From"] == "Alice <alice@example.com>"
    assert message.get_payload() == "Noon at the usual place?\n-- \nAlice\n"
    assert list(message.keys())[:3] == ["Return-Path", "Delivered-To", "Received"]


def test_layout_is_domain_user_maildir_with_three_subfolders(
    maildir: Maildir, tmp_path: Path
) -> None:
    name = _deliver(maildir)
    root = tmp_path / "mail" / "example.test" / "bob" / "Maildir"
    assert maildir.path("example.test", "bob") == root
    # the three subfolders and nothing else: a delivery takes no lock and writes no list
    # (the next look numbers the message), as Postfix's virtual(8) delivers
    assert sorted(p.name for p in root.iterdir()) == ["cur", "new", "tmp"]
    assert [p.name for p in (root / "new").iterdir()] == [name]
    assert not any((root / "tmp").iterdir())
    assert not any((root / "cur").iterdir())


def test_file_uses_lf_line_endings_and_exact_bytes(maildir: Maildir) -> None:
    name = _deliver(maildir)
    content = (maildir.path("example.test", "bob") / "new" / name).read_bytes()
    expected = (
        b"Return-Path: <alice@example.com>\r\nDelivered-To: bob@example.test\r\n" + MESSAGE
    ).replace(b"\r\n", b"\n")
    assert content == expected
    assert b"\r" not in content


def test_unique_name_follows_the_maildir_spec_with_sizes(
    maildir: Maildir, fake_clock: FakeClock
) -> None:
    fake_clock.now = 1_800_000_000.25
    name = _deliver(maildir)
    match = NAME.fullmatch(name)
    assert match, name
    path = maildir.path("example.test", "bob") / "new" / name
    assert int(match["sec"]) == 1_800_000_000
    assert int(match["usec"]) == 250_000
    assert int(match["pid"]) == os.getpid()
    assert match["host"] == "mx1.example.test"
    assert int(match["size"]) == path.stat().st_size
    # W: the message as stored (CRLF) plus the two trace lines, also CRLF.
    trace = len(b"Return-Path: <alice@example.com>\r\nDelivered-To: bob@example.test\r\n")
    assert int(match["vsize"]) == len(MESSAGE) + trace


def test_host_name_separators_are_escaped(tmp_path: Path, fake_clock: FakeClock) -> None:
    maildir = Maildir(tmp_path / "mail", clock=fake_clock, hostname="odd/host:name,x")
    name = _deliver(maildir)
    assert r"odd\057host\072name\054x," in name
    assert name.count(",") == 2  # only the S= and W= separators
    assert ":" not in name and "/" not in name


def test_folders_are_0700_and_the_file_0600(maildir: Maildir, tmp_path: Path) -> None:
    name = _deliver(maildir)
    root = tmp_path / "mail"
    folders = [root, root / "example.test", root / "example.test" / "bob"]
    box = maildir.path("example.test", "bob")
    folders += [box, box / "tmp", box / "new", box / "cur"]
    for folder in folders:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE((box / "new" / name).stat().st_mode) == 0o600


def test_null_sender_gives_empty_return_path(maildir: Maildir) -> None:
    name = _deliver(maildir, sender="")
    message = _read(maildir.path("example.test", "bob"))[name]
    assert message["Return-Path"] == "<>"


def test_line_breaks_in_envelope_values_cannot_add_headers(maildir: Maildir) -> None:
    name = _deliver(maildir, sender="evil@example.com\r\nX-Injected: 1", recipient="bob\n@x")
    message = _read(maildir.path("example.test", "bob"))[name]
    assert message["X-Injected"] is None
    assert message["Return-Path"] == "<evil@example.comX-Injected: 1>"
    assert message["Delivered-To"] == "bob@x"


async def test_many_concurrent_deliveries_get_unique_names_and_leave_tmp_empty(
    maildir: Maildir,
) -> None:
    # The fake clock stands still: names must differ by more than the time.
    count = 200
    users = ["bob", "carol"]
    names = await asyncio.gather(
        *(
            maildir.deliver(
                "example.test",
                users[i % 2],
                MESSAGE + f"n={i}\r\n".encode(),
                sender="alice@example.com",
                recipient=f"{users[i % 2]}@example.test",
            )
            for i in range(count)
        )
    )
    assert len(set(names)) == count
    bodies: set[str] = set()
    for user in users:
        path = maildir.path("example.test", user)
        assert not any((path / "tmp").iterdir())
        box = _read(path)
        assert len(box) == count // 2
        bodies.update(str(m.get_payload()).rsplit("\n", 2)[-2] for m in box)
    assert bodies == {f"n={i}" for i in range(count)}
    # Deliveries that raced to make a user's Maildir removed the copies they built.
    for user in users:
        assert [p.name for p in maildir.path("example.test", user).parent.iterdir()] == ["Maildir"]


def test_two_stores_on_one_root_with_a_frozen_clock_do_not_clash(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    first = Maildir(tmp_path / "mail", clock=fake_clock, hostname="h")
    second = Maildir(tmp_path / "mail", clock=fake_clock, hostname="h")
    names = {_deliver(first), _deliver(second), _deliver(first), _deliver(second)}
    assert len(names) == 4
    assert len(_read(first.path("example.test", "bob"))) == 4


def test_fsyncs_the_file_then_the_new_folder(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    _deliver(maildir)  # folders exist; now watch one delivery
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    name = _deliver(maildir)
    box = maildir.path("example.test", "bob")
    assert synced == [str(box / "tmp" / name), str(box / "new")]


def test_a_new_maildir_appears_with_its_three_subfolders_at_once(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Readers list new/ and cur/ as soon as Maildir exists: look after every step.
    box = maildir.path("example.test", "bob")
    seen: list[list[str] | None] = []

    def watch(call: Callable[..., object]) -> Callable[..., object]:
        def watched(*args: object, **kwargs: object) -> object:
            result = call(*args, **kwargs)
            seen.append(sorted(p.name for p in box.iterdir()) if box.exists() else None)
            return result

        return watched

    for name in ("mkdir", "rename", "fsync"):
        monkeypatch.setattr(os, name, watch(getattr(os, name)))
    _deliver(maildir)
    assert None in seen  # it was watched before it existed
    # never without its subfolders (the UID list and its lock come later)
    assert all(state is None or {"cur", "new", "tmp"} <= set(state) for state in seen), seen


def test_a_maildir_missing_a_subfolder_gets_it(maildir: Maildir) -> None:
    box = maildir.path("example.test", "bob")
    (box / "new").mkdir(parents=True)  # made by hand, or half-made by an older version
    name = _deliver(maildir)
    assert {"cur", "new", "tmp"} <= {p.name for p in box.iterdir()}
    assert list(_read(box).keys()) == [name]


def test_a_maildir_removed_after_a_delivery_is_made_again_by_the_next(
    maildir: Maildir,
) -> None:
    # Deliveries remember a mailbox found whole; one removed by hand meanwhile is made again.
    _deliver(maildir)
    box = maildir.path("example.test", "bob")
    shutil.rmtree(box)
    name = _deliver(maildir)
    assert {"cur", "new", "tmp"} <= {p.name for p in box.iterdir()}
    assert list(_read(box).keys()) == [name]


def test_a_failed_write_leaves_nothing_in_tmp_or_new(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    _deliver(maildir)
    box = maildir.path("example.test", "bob")

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError) as info:
        _deliver(maildir)
    assert info.value.errno == errno.ENOSPC
    assert not any((box / "tmp").iterdir())
    assert len(list((box / "new").iterdir())) == 1  # only the first delivery


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        ".hidden",
        "a/b",
        "../etc",
        "a\\b",
        "a\x00b",
        "a\nb",
        "a\rb",
        "\x7f",
        "é" * 128,
    ],
)
def test_unsafe_folder_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        check_folder_name(name)


@pytest.mark.parametrize(
    "name", ["bob", "j.doe", "bob+tag", "xn--bcher-kva.example", "[192.0.2.1]", "jörg"]
)
def test_ordinary_folder_names_pass(name: str) -> None:
    assert check_folder_name(name) == name


def test_unsafe_user_or_domain_creates_nothing(maildir: Maildir, tmp_path: Path) -> None:
    for domain, user in [("example.test", "../../escape"), ("..", "bob"), ("example.test", "")]:
        with pytest.raises(ValueError):
            _deliver(maildir, domain=domain, user=user)
    assert not (tmp_path / "mail").exists()
    assert not (tmp_path / "escape").exists()
