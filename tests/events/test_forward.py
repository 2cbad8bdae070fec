"""A worker's attempts told to the primary's alerts over a real Unix datagram socket."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import pytest

from postroom.events import DeliveryAttempt
from postroom.events.forward import AttemptForwarder, AttemptReceiver, socket_path
from tests.support.attempts import BOUNCE as ATTEMPT


class Got(list[DeliveryAttempt]):
    """What the receiver handed on; ``until(n)`` waits for the n-th."""

    def __init__(self) -> None:
        super().__init__()
        self.more = asyncio.Event()

    def __call__(self, attempt: DeliveryAttempt) -> None:
        self.append(attempt)
        self.more.set()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self) < count:
                self.more.clear()
                await self.more.wait()


async def test_each_attempt_reaches_the_primary_as_it_was_published(tmp_path: Path) -> None:
    got = Got()
    receiver = AttemptReceiver(tmp_path, got)
    assert receiver.start()
    forwarder = AttemptForwarder(tmp_path)
    try:
        forwarder(ATTEMPT)
        forwarder("not an attempt")  # other events stay in the worker
        long = dataclasses.replace(ATTEMPT, queue_id="Q2", reply="550 " + "x" * 20_000)
        forwarder(long)
        await got.until(2)
        assert got[0] == ATTEMPT
        assert got[1].queue_id == "Q2" and got[1].reply == long.reply[:8000]
    finally:
        forwarder.close()
        receiver.close()
    assert not socket_path(tmp_path).exists()


async def test_a_datagram_not_of_ours_is_ignored(tmp_path: Path) -> None:
    got = Got()
    receiver = AttemptReceiver(tmp_path, got)
    assert receiver.start()
    forwarder = AttemptForwarder(tmp_path)
    try:
        from postroom.net.wakeup import DatagramSender

        stranger = DatagramSender(socket_path(tmp_path))
        assert stranger.send(b"{not json") and stranger.send(b'{"queue_id": "Q"}')
        stranger.close()
        forwarder(ATTEMPT)
        await got.until(1)
        assert got == [ATTEMPT]
    finally:
        forwarder.close()
        receiver.close()


def test_with_no_primary_listening_the_worker_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    forwarder = AttemptForwarder(tmp_path)
    try:
        with caplog.at_level(logging.WARNING, logger="postroom.events"):
            for _ in range(3):
                forwarder(ATTEMPT)
        assert [r.getMessage() for r in caplog.records] == [
            "the primary's alerts did not take this worker's attempts"
        ]
    finally:
        forwarder.close()
