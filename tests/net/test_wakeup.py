"""The cross-process wake-up socket, with real Unix datagram sockets."""

from __future__ import annotations

import asyncio
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.net.wakeup import Notifier, WakeupListener, notify, socket_path


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Socket addresses are limited to about 108 bytes: pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="pr-") as name:
        yield Path(name)


async def test_notify_wakes_the_listener_once_per_burst(short_dir: Path) -> None:
    woke = asyncio.Event()
    calls: list[int] = []

    def on_wake() -> None:
        calls.append(1)
        woke.set()

    listener = WakeupListener(short_dir, on_wake)
    assert listener.start()
    assert stat.S_IMODE(os.stat(socket_path(short_dir)).st_mode) == 0o600
    assert all(notify(short_dir) for _ in range(5))
    await asyncio.wait_for(woke.wait(), 5)
    assert 1 <= len(calls) <= 5
    listener.close()
    assert not socket_path(short_dir).exists()


def test_notify_without_a_listener_says_so(short_dir: Path) -> None:
    assert notify(short_dir) is False
    socket_path(short_dir).touch()  # a stale file, not a socket
    assert notify(short_dir) is False


async def test_a_stale_socket_file_is_replaced(short_dir: Path) -> None:
    socket_path(short_dir).write_bytes(b"")  # left by a killed server
    woke = asyncio.Event()
    listener = WakeupListener(short_dir, woke.set)
    assert listener.start()
    assert notify(short_dir)
    await asyncio.wait_for(woke.wait(), 5)
    listener.close()


async def test_a_path_too_long_for_a_socket_falls_back(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    listener = WakeupListener(deep, lambda: None)
    assert listener.start() is False
    assert notify(deep) is False
    listener.close()


async def test_one_notifier_reaches_the_listener_again_after_a_restart(short_dir: Path) -> None:
    with Notifier(short_dir) as notifier:
        assert notifier() is False  # no server yet
        for _ in range(2):  # the primary starts, stops, and starts again
            woke = asyncio.Event()
            listener = WakeupListener(short_dir, woke.set)
            assert listener.start()
            assert notifier()
            await asyncio.wait_for(woke.wait(), 5)
            listener.close()
        assert notifier() is False
