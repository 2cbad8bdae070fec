"""The control socket: a `status` request gets the server's description as JSON, other
requests get an error, a failing description is logged and the socket keeps answering,
and a second server never takes the socket of one that answers."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from pathlib import Path

import pytest

from postroom.net.control import ControlListener, NoAnswer, ask_status, control_path


def _ask_raw(path: Path, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(os.fspath(path))
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        return sock.makefile("rb").read()


async def test_status_is_answered_and_other_requests_are_refused(tmp_path: Path) -> None:
    listener = ControlListener(tmp_path, lambda: {"pid": 7})
    assert await listener.start()
    try:
        assert control_path(tmp_path).stat().st_mode & 0o777 == 0o600
        assert await asyncio.to_thread(ask_status, tmp_path) == {"pid": 7}
        other = await asyncio.to_thread(_ask_raw, control_path(tmp_path), b"shutdown\n")
        assert json.loads(other) == {"error": "unknown request: send `status`"}
    finally:
        await listener.close()
    assert not control_path(tmp_path).exists()
    assert await asyncio.to_thread(ask_status, tmp_path) is None


async def test_a_failing_description_is_logged_and_the_socket_keeps_answering(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    def describe() -> dict[str, object]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug")
        return {"pid": 8}

    listener = ControlListener(tmp_path, describe)
    assert await listener.start()
    try:
        with pytest.raises(NoAnswer):
            await asyncio.to_thread(ask_status, tmp_path)
        assert await asyncio.to_thread(ask_status, tmp_path) == {"pid": 8}
    finally:
        await listener.close()
    assert any(
        r.levelno == logging.ERROR and "the status answer failed" in r.getMessage()
        for r in caplog.records
    )


async def test_a_second_server_does_not_take_the_socket_of_one_that_answers(
    tmp_path: Path,
) -> None:
    first = ControlListener(tmp_path, lambda: {"pid": 1})
    second = ControlListener(tmp_path, lambda: {"pid": 2})
    assert await first.start()
    try:
        assert not await second.start()
        await second.close()  # closes nothing of the first's
        assert await asyncio.to_thread(ask_status, tmp_path) == {"pid": 1}
    finally:
        await first.close()
