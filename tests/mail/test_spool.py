"""SpooledBody: memory below the threshold, an anonymous temp file above it."""

from __future__ import annotations

import os
from pathlib import Path

from postroom.mail.spool import SpooledBody


def test_small_body_stays_in_memory(tmp_path: Path) -> None:
    body = SpooledBody(tmp_path / "spool", threshold=64)
    body.write(b"Subject: hi\r\n")
    body.write(bytearray(b"\r\n"))
    body.write(memoryview(b"Hello\r\n"))
    assert body.in_memory
    assert body.size == 22
    assert body.getvalue() == b"Subject: hi\r\n\r\nHello\r\n"
    assert not (tmp_path / "spool").exists()  # no directory, no file


def test_exactly_the_threshold_stays_in_memory_one_more_byte_rolls_over(tmp_path: Path) -> None:
    body = SpooledBody(tmp_path, threshold=10)
    body.write(b"0123456789")
    in_memory = [body.in_memory]
    body.write(b"A")
    in_memory.append(body.in_memory)
    assert in_memory == [True, False]
    assert body.size == 11
    assert body.getvalue() == b"0123456789A"
    body.close()


def test_rolled_over_content_is_exact_and_no_file_is_left(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    body = SpooledBody(spool_dir, threshold=1000)
    chunks = [os.urandom(n) for n in (300, 600, 250, 5000, 1, 0, 70_000)]
    for chunk in chunks:
        body.write(chunk)
    assert not body.in_memory
    assert body.size == sum(map(len, chunks))
    assert body.getvalue() == b"".join(chunks)
    assert list(spool_dir.iterdir()) == []  # unlinked at once: nothing to clean up
    body.close()


def test_chunks_are_bounded_and_can_be_read_again(tmp_path: Path) -> None:
    data = bytes(range(256)) * 100
    for threshold in (len(data), 100):  # in memory, then on disk
        body = SpooledBody(tmp_path, threshold=threshold)
        body.write(data)
        first = list(body.iter_chunks(chunk_size=1000))
        assert all(len(chunk) <= 1000 for chunk in first)
        assert b"".join(first) == data
        assert b"".join(body.iter_chunks(chunk_size=7)) == data  # a retry reads it all again
        body.close()


def test_empty_body(tmp_path: Path) -> None:
    body = SpooledBody(tmp_path)
    assert body.size == 0
    assert body.in_memory
    assert body.getvalue() == b""
    assert list(body.iter_chunks()) == []


def test_close_releases_the_file(tmp_path: Path) -> None:
    body = SpooledBody(tmp_path, threshold=4)
    body.write(b"more than four")
    before = len(os.listdir("/proc/self/fd"))
    body.close()
    assert len(os.listdir("/proc/self/fd")) == before - 1
    body.close()  # twice is harmless
