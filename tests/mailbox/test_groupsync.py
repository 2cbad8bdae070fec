"""Maildir files made durable in batches: each file fsync'ed before its rename into
``new/``, each ``new/`` fsync'ed once a batch, every failure its own file's, and no
fault that stops the thread."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from postroom.mailbox import Maildir
from postroom.mailbox.groupsync import GroupSync, fsync_dir
from tests.conftest import FakeClock


def _maildir(root: Path) -> tuple[str, str]:
    for sub in ("tmp", "new"):
        (root / sub).mkdir(parents=True)
    return str(root / "tmp"), str(root / "new")


def _written(tmp: str, name: str, content: bytes = b"Subject: hi\n\nhello\n") -> int:
    fd = os.open(f"{tmp}/{name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, content)
    return fd


class Recorded:
    """fsyncs as a batch makes them: files by name, folders by path."""

    def __init__(self, fail_file: str | None = None, fail_folder: BaseException | None = None):
        self.calls: list[str] = []
        self._fail_file = fail_file
        self._fail_folder = fail_folder

    def file(self, fd: int) -> None:
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        self.calls.append(name)
        if name == self._fail_file:
            raise OSError(errno.EIO, "Input/output error")
        os.fsync(fd)

    def folder(self, path: str) -> None:
        self.calls.append(path)
        if self._fail_folder is not None:
            raise self._fail_folder
        fsync_dir(path)


async def _land_all(sync: GroupSync, tmp: str, new: str, names: list[str]) -> list[object]:
    lands = [
        sync.land(_written(tmp, name), f"{tmp}/{name}", f"{new}/{name}", new) for name in names
    ]
    return await asyncio.gather(*lands, return_exceptions=True)


async def test_files_handed_in_together_share_one_fsync_of_new(tmp_path: Path) -> None:
    tmp, new = _maildir(tmp_path)
    fsyncs = Recorded()
    # The batch waits for all eight (a gather this long never ends by time).
    sync = GroupSync(gather=60.0, most=8, sync_file=fsyncs.file, sync_folder=fsyncs.folder)
    names = [f"m{n}" for n in range(8)]
    assert await _land_all(sync, tmp, new, names) == [None] * 8
    assert sorted(os.listdir(new)) == names
    assert os.listdir(tmp) == []
    # every file fsync'ed before any rename's folder, and the folder once
    assert sorted(fsyncs.calls[:8]) == names
    assert fsyncs.calls[8:] == [new]


async def test_a_file_whose_fsync_fails_is_removed_and_the_others_land(tmp_path: Path) -> None:
    tmp, new = _maildir(tmp_path)
    fsyncs = Recorded(fail_file="m1")
    sync = GroupSync(gather=60.0, most=3, sync_file=fsyncs.file, sync_folder=fsyncs.folder)
    results = await _land_all(sync, tmp, new, ["m0", "m1", "m2"])
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], OSError) and results[1].errno == errno.EIO
    assert sorted(os.listdir(new)) == ["m0", "m2"]
    assert os.listdir(tmp) == []  # the failed file is not left behind


async def test_a_failed_fsync_of_new_fails_the_files_renamed_into_it(tmp_path: Path) -> None:
    """The files are in new/ but not durable: their deliveries are tried again (a
    message may arrive twice, never be lost)."""
    tmp, new = _maildir(tmp_path / "bob")
    other_tmp, other_new = _maildir(tmp_path / "carol")
    failing = OSError(errno.EIO, "Input/output error")

    def folder(path: str) -> None:
        if path == new:
            raise failing
        fsync_dir(path)

    sync = GroupSync(gather=60.0, most=2, sync_folder=folder)
    bob = sync.land(_written(tmp, "b"), f"{tmp}/b", f"{new}/b", new)
    carol = sync.land(_written(other_tmp, "c"), f"{other_tmp}/c", f"{other_new}/c", other_new)
    results = await asyncio.gather(bob, carol, return_exceptions=True)
    assert list(results) == [failing, None]
    assert os.listdir(other_new) == ["c"]


async def test_a_fault_in_the_thread_answers_the_batch_and_the_next_one_lands(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tmp, new = _maildir(tmp_path)
    faults = [RuntimeError("a bug")]

    def folder(path: str) -> None:
        if faults:
            raise faults.pop()
        fsync_dir(path)

    sync = GroupSync(gather=60.0, most=2, sync_folder=folder)
    with caplog.at_level(logging.ERROR, logger="postroom.mailbox"):
        first = await _land_all(sync, tmp, new, ["m0", "m1"])
    assert [type(result) for result in first] == [RuntimeError, RuntimeError]
    assert "making 2 Maildir file(s) durable failed" in caplog.text
    assert await _land_all(sync, tmp, new, ["m2", "m3"]) == [None, None]
    assert sorted(os.listdir(new)) == ["m0", "m1", "m2", "m3"]


async def test_a_cancelled_wait_does_not_stop_the_file_from_landing(tmp_path: Path) -> None:
    tmp, new = _maildir(tmp_path)
    started, release = threading.Event(), threading.Event()

    def held(fd: int) -> None:
        started.set()
        release.wait(10)
        os.fsync(fd)

    sync = GroupSync(gather=0.0, sync_file=held)
    waiting = asyncio.create_task(sync.land(_written(tmp, "m0"), f"{tmp}/m0", f"{new}/m0", new))
    assert await asyncio.to_thread(started.wait, 10)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    release.set()
    # The next file's batch runs after the first's: once it has landed, so has the first.
    fd = _written(tmp, "m1")
    await asyncio.to_thread(sync.land_blocking, fd, f"{tmp}/m1", f"{new}/m1", new)
    assert sorted(os.listdir(new)) == ["m0", "m1"]


def test_threads_that_block_land_files_too_and_the_idle_thread_ends(tmp_path: Path) -> None:
    tmp, new = _maildir(tmp_path)
    sync = GroupSync(gather=0.0, idle=0.0)
    landed: list[str] = []

    def land(name: str) -> Callable[[], None]:
        return lambda: landed.append(name)

    threads = [
        threading.Thread(
            target=sync.land_blocking,
            args=(_written(tmp, name), f"{tmp}/{name}", f"{new}/{name}", new, land(name)),
        )
        for name in ("m0", "m1", "m2")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(landed) == ["m0", "m1", "m2"]  # each file's own step, once it is durable
    assert sorted(os.listdir(new)) == ["m0", "m1", "m2"]
    worker = sync._syncer
    if worker is not None:  # nothing more to do: it ends, and the next file starts another
        worker.join(10)
        assert not worker.is_alive()
    sync.land_blocking(_written(tmp, "m3"), f"{tmp}/m3", f"{new}/m3", new)
    assert "m3" in os.listdir(new)


async def test_a_small_delivery_is_written_on_the_loop_and_a_large_one_in_a_thread(
    tmp_path: Path, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    maildir = Maildir(tmp_path / "mail", clock=fake_clock, hostname="mx1")
    writers: list[bool] = []
    create = maildir._create_tmp

    def recorded(*args: object, **kwargs: object) -> tuple[str, int]:
        writers.append(threading.current_thread() is threading.main_thread())
        return create(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(maildir, "_create_tmp", recorded)

    async def deliver(data: bytes) -> str:
        return await maildir.deliver(
            "example.test", "bob", data, sender="a@example.com", recipient="bob@example.test"
        )

    await deliver(b"Subject: first\r\n\r\nmakes the folders\r\n")
    await deliver(b"Subject: small\r\n\r\nhello\r\n")
    await deliver(b"Subject: large\r\n\r\n" + b"x" * 70_000 + b"\r\n")
    # the first (folders to make) and the large one in a thread, the small one here
    assert writers == [False, True, False]
    assert len(os.listdir(maildir.path("example.test", "bob") / "new")) == 3
