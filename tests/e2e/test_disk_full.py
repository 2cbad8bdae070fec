"""A full disk: the client gets 452 4.3.1, nothing half-written remains, the server goes on."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_smtp_session import queued_id
from tests.support.servers import smtp_client
from tests.support.thread import MakeServer, ServerThread


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("this test mounts a small tmpfs and must run as root (as CI does)")
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_full_disk_answers_452_and_keeps_the_queue_consistent(
    make_server: MakeServer, tiny_disk: Path
) -> None:
    srv: ServerThread = make_server(data_dir=tiny_disk / "data", limits={"spool_memory": 0})
    srv.add_domain("example.test")
    srv.add_user("app@example.test", "pw")
    accepted: list[str] = []
    refusals: list[tuple[int, bytes]] = []
    chunk = os.urandom(200_000).hex().encode()  # 400 KB that does not compress
    body = (
        b"Subject: fill\r\n\r\n"
        + b"\r\n".join(chunk[i : i + 76] for i in range(0, len(chunk), 76))
        + b"\r\n"
    )
    with smtp_client(srv.ports["mx"]) as client:
        client.ehlo("client.test")
        for _ in range(20):
            client.mail("a@elsewhere.test")
            client.rcpt("app@example.test")
            code, text = client.data(body)
            if code == 250:
                accepted.append(queued_id((code, text)))
            else:
                refusals.append((code, text))
                break
    assert refusals, "the disk never filled"
    code, text = refusals[0]
    assert (code, text[:5]) == (452, b"4.3.1")
    assert srv.call(srv.store.count_messages()) == len(accepted)
    for queue_id in accepted:
        stored = srv.call(srv.store.read_body(queue_id))
        assert stored is not None and stored.endswith(body)
    # a small message still fits? The server keeps answering either way
    with smtp_client(srv.ports["mx"]) as client:
        assert client.noop()[0] == 250
