"""The operator's queue controls against a real `postroom serve` process: the queue
commands wake it (no wait for its periodic check), everything can be held and released,
and ``delivery.paused`` accepts mail but delivers none until the next unpaused start."""

from __future__ import annotations

import json
import signal
import smtplib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import (
    RunningProcess,
    cli_out,
    run_cli,
    start_process,
    wait_for,
    write_config,
)
from tests.support.smtp_peers import Peers, SmtpPeer

MESSAGE = b"From: app@example.test\r\nTo: friend@remote.test\r\nSubject: Receipt\r\n\r\nThanks!\r\n"
# The scheduler looks at the queue on its own at least every 60 s; an action that takes
# effect within this bound was carried by the wake-up, not by that periodic check.
WELL_BEFORE_THE_PERIODIC_CHECK = 20.0


@pytest.fixture
def peers() -> Iterator[Peers]:
    with Peers() as started:
        yield started


def peer_config(tmp_path: Path, peer: SmtpPeer, *, paused: bool = False) -> Path:
    extra = (
        f"[delivery]\npaused = {'true' if paused else 'false'}\n"
        f'[[mailers]]\nname = "peer"\ntype = "smtp"\nhost = "127.0.0.1"\nport = {peer.port}\n'
        'tls = "none"\ntimeout = 5\n'
        '[[routes]]\nname = "all"\nmailers = ["peer"]\n'
    )
    return write_config(tmp_path / "postroom.toml", tmp_path / "data", extra=extra)


def submit(proc: RunningProcess) -> None:
    with smtplib.SMTP("127.0.0.1", proc.ports["mx"], timeout=10) as client:
        client.sendmail("a@elsewhere.test", ["postmaster@example.test"], MESSAGE)


def statuses(config: Path) -> list[str]:
    listed = json.loads(cli_out(config, "queue", "list", "--json"))
    return [r["status"] for m in listed for r in m["recipients"]]


@pytest.fixture
def stop_at_end() -> Iterator[list[RunningProcess]]:
    started: list[RunningProcess] = []
    yield started
    for proc in started:
        if proc.process.poll() is None:
            proc.signal(signal.SIGTERM)
            assert proc.wait() == 0


def test_retry_from_the_cli_is_attempted_at_once(
    peers: Peers, tmp_path: Path, stop_at_end: list[RunningProcess]
) -> None:
    peer = peers.start("127.0.0.1", greylist=True)  # the first attempt is deferred
    config = peer_config(tmp_path, peer)
    cli_out(config, "domain", "add", "example.test")
    proc = start_process(config, tmp_path / "postroom.log")
    stop_at_end.append(proc)
    submit(proc)
    wait_for(lambda: statuses(config) == ["deferred"])  # next attempt in about 5 minutes

    assert cli_out(config, "queue", "hold", "--all") == "1 message held\n"
    assert cli_out(config, "queue", "retry", "--all").startswith("0 recipients")
    assert cli_out(config, "queue", "release", "--all") == "1 message released\n"
    assert cli_out(config, "queue", "retry", "--all") == (
        "1 recipient in the queue will be tried now\n"
    )
    wait_for(lambda: len(peer.received) == 1, within=WELL_BEFORE_THE_PERIODIC_CHECK)
    wait_for(lambda: statuses(config) == ["delivered"])


def test_paused_delivery_queues_and_delivers_after_an_unpaused_start(
    peers: Peers, tmp_path: Path, stop_at_end: list[RunningProcess]
) -> None:
    peer = peers.start("127.0.0.1")
    config = peer_config(tmp_path, peer, paused=True)
    cli_out(config, "domain", "add", "example.test")
    proc = start_process(config, tmp_path / "postroom.log")
    stop_at_end.append(proc)
    submit(proc)  # accepted: 250 means queued, paused or not
    ready = httpx.get(f"http://127.0.0.1:{proc.api_port}/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "delivery": "paused"}
    assert "delivery is paused" in proc.log.read_text()
    status = json.loads(cli_out(config, "status", "--json"))
    assert (status["ready"], status["delivery"]["paused"]) == (True, True)
    assert status["queue"]["queued"] == 1
    retried = cli_out(config, "queue", "retry", "--all")
    assert retried == (
        "1 recipient in the queue will be tried now\n"
        "delivery is paused (delivery.paused): they are tried once it is not\n"
    )
    with pytest.raises(AssertionError):  # woken, and still claims nothing
        wait_for(lambda: peer.connections > 0, within=2)
    assert statuses(config) == ["queued"]
    # a timeout longer than the command is given to run: ending at all means at once
    waited = run_cli(config, "send", "--to", "friend@remote.test", "--wait", "--timeout", "1e5")
    assert waited.returncode == 75, waited.stderr
    assert "delivery is paused (delivery.paused): the message waits until it is not" in (
        waited.stdout
    )

    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    config = peer_config(tmp_path, peer)
    proc = start_process(config, tmp_path / "postroom.log")
    stop_at_end.append(proc)
    wait_for(lambda: len(peer.received) == 2)
    status = json.loads(cli_out(config, "status", "--json"))
    assert (status["ready"], status["delivery"]["paused"]) == (True, False)
