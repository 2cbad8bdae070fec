"""Listener: a handler that fails is logged and gives its connection slot back."""

from __future__ import annotations

import asyncio
import logging

import pytest

from postroom.net.listener import Listener
from postroom.net.stream import Stream
from postroom.net.throttle import ConnectionCounter


async def test_a_failing_handler_is_logged_and_keeps_no_connection_slot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def handler(stream: Stream) -> None:
        nonlocal calls
        calls += 1
        if calls <= 5:
            raise RuntimeError("handler fault")
        stream.write(b"served\r\n")
        await stream.drain()

    counter = ConnectionCounter(max_total=1, max_per_ip=1)
    listener = Listener(
        address="127.0.0.1", port=0, handler=handler, counter=counter, refusal=b"refused\r\n"
    )
    await listener.start()
    try:
        with caplog.at_level(logging.ERROR, logger="postroom.net"):
            for _ in range(6):
                reader, writer = await asyncio.open_connection("127.0.0.1", listener.bound_port)
                async with asyncio.timeout(10):
                    answer = await reader.read()
                writer.close()
                await writer.wait_closed()
    finally:
        listener.stop_accepting()
        await listener.wait_closed()

    assert answer == b"served\r\n"  # not b"refused": the five failures kept no slot
    assert counter.total == 0
    failures = [r for r in caplog.records if r.name == "postroom.net"]
    assert len(failures) == 5
    assert all(r.exc_info is not None for r in failures)
    assert "client=127.0.0.1 listener=127.0.0.1:" in failures[0].getMessage()
