"""Relay mail delivered at once by the processes that accepted it (``workers = 2``,
``delivery.relay_at_once``), to a loopback relay: a worker hands its own mail on,
a relay's ``max_connections`` holds across the processes, and kill -9 loses nothing
(a second copy only of a message whose delivery was not yet recorded)."""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import signal
import smtplib
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.crashcheck import assert_at_least_once, tokens, unsettled
from tests.support.depth import examples
from tests.support.http_fake import Reply, serve
from tests.support.processes import (
    children,
    clients_taken_by,
    clients_taken_while_stopped,
    kill_all_amid_load,
    one_per_connection,
)
from tests.support.servers import (
    RunningProcess,
    port_is_open,
    run_cli,
    start_process,
    wait_for,
    write_config,
)
from tests.support.smtp_peers import Peers, SmtpPeer

SUBJECT = re.compile(rb"^Subject: relayed (\S+)$", re.MULTILINE)
SENDER = "app@example.test"
PASSWORD = "a long password"


@pytest.fixture
def home() -> Iterator[Path]:
    # The wake-up and write sockets' paths must fit a socket address (about 108 bytes).
    path = Path(tempfile.mkdtemp(prefix="pr-r-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def peers() -> Iterator[Peers]:
    with Peers() as started:
        yield started


def start(
    home: Path, peer: SmtpPeer, connections: int, extra: str = ""
) -> tuple[RunningProcess, Path]:
    tables = (
        f"[delivery]\nlease = 2.0\n{extra}"
        f'[[mailers]]\nname = "relay"\ntype = "smtp"\nhost = "{peer.host}"\nport = {peer.port}\n'
        f'tls = "none"\ntimeout = 30\nmax_connections = {connections}\n'
        '[[routes]]\nname = "all"\nmailers = ["relay"]\n'
    )
    config = write_config(home / "postroom.toml", home / "data", tables, top="workers = 2\n")
    for args in (("domain", "add", "example.test"), ("user", "add", SENDER, "--password-stdin")):
        assert run_cli(config, *args, stdin=f"{PASSWORD}\n").returncode == 0
    return start_process(config, home / "postroom.log"), config


def message(token: str) -> bytes:
    return f"From: {SENDER}\r\nSubject: relayed {token}\r\n\r\nhello {token}\r\n".encode()


def submit(client: smtplib.SMTP, token: str, options: Sequence[str] = ()) -> None:
    """STARTTLS, AUTH and one message, as an application submits; ``options``: the
    recipient's (RCPT parameters)."""
    client.starttls()
    client.ehlo()
    client.login(SENDER, PASSWORD)
    rcpt = f"{token}@remote.test"
    assert client.sendmail(SENDER, [rcpt], message(token), rcpt_options=list(options)) == {}


def test_each_process_relays_its_own_mail_within_one_max_connections(
    home: Path, peers: Peers
) -> None:
    peer = peers.start()
    server, _ = start(home, peer, connections=1)
    primary = server.process.pid
    try:
        first, second = children(primary)
        port = server.ports["submission"]
        with clients_taken_by(first, primary, port) as (client,):
            submit(client, "w1")
        # Taken and committed by the worker; with the primary stopped, the worker
        # still hands it on (its outcome waits for the primary, or takes its own
        # connection): the relay getting it proves who delivered.
        os.kill(primary, signal.SIGSTOP)
        try:
            wait_for(lambda: len(peer.received) == 1, within=10)
        finally:
            os.kill(primary, signal.SIGCONT)
        # Both workers now relay at once to a relay allowed one connection: the slot
        # is the store's, shared, so the second waits for the first.
        peer.hold()
        with (
            clients_taken_by(first, primary, port) as (by_first,),
            clients_taken_by(second, primary, port) as (by_second,),
        ):
            submit(by_first, "w2")
            submit(by_second, "p1")
        wait_for(lambda: peer.held == 1, within=10)
        with pytest.raises(AssertionError):  # the other never opens a second connection
            wait_for(lambda: peer.max_active > 1, within=2)
        peer.release()
        wait_for(lambda: len(peer.received) == 3, within=30)
        assert peer.max_active == 1
        assert sorted(r.recipients[0] for r in peer.received) == [
            "p1@remote.test",
            "w1@remote.test",
            "w2@remote.test",
        ]
    finally:
        if server.process.poll() is None:
            server.signal(signal.SIGTERM)
            assert server.wait() == 0


def test_a_bounce_in_the_worker_raises_the_primary_alert(home: Path, peers: Peers) -> None:
    """The primary alone sends alerts; the worker tells it of the attempts it made."""
    peer = peers.start(reject_rcpt={"gone@remote.test": "550 5.1.1 No such user"})
    with serve(lambda request: Reply(200, b"ok")) as hook:
        alert = (
            f'[[alerts]]\nname = "ops"\nformat = "webhook"\nurl = "{hook.url}/alert"\n'
            'on = ["bounced"]\n'
        )
        server, _ = start(home, peer, connections=2, extra=alert)
        primary = server.process.pid
        try:
            with clients_taken_while_stopped(primary, server.ports["submission"]) as (client,):
                client.starttls()
                client.ehlo()
                client.login(SENDER, PASSWORD)
                client.sendmail(SENDER, ["gone@remote.test"], message("gone"))
            wait_for(lambda: len(hook.requests) == 1, within=15)
            (posted,) = hook.requests
            assert posted.path == "/alert"
            assert "gone@remote.test" in posted.body.decode()
            assert "5.1.1" in posted.body.decode()
        finally:
            server.signal(signal.SIGTERM)
            assert server.wait() == 0


def test_a_bounce_while_the_server_stops_still_raises_the_alert(home: Path, peers: Peers) -> None:
    """A worker's relay still answering when the server is told to stop: the worker
    settles it within the grace, and the primary, which sends alerts, hears of the
    bounce and sends its alert before it stops."""
    peer = peers.start(data_reply="550 5.7.1 Refused by policy")
    with serve(lambda request: Reply(200, b"ok")) as hook:
        alert = (
            f'[[alerts]]\nname = "ops"\nformat = "webhook"\nurl = "{hook.url}/alert"\n'
            'on = ["bounced"]\n'
        )
        server, _ = start(home, peer, connections=2, extra=alert)
        primary, port = server.process.pid, server.ports["submission"]
        peer.hold()
        try:
            with clients_taken_while_stopped(primary, port) as (client,):
                # The worker's 250; the relay now holds its DATA. NOTIFY=NEVER: no DSN,
                # whose own bounce could raise the alert first.
                submit(client, "late", ["NOTIFY=NEVER"])
            wait_for(lambda: peer.held == 1, within=15)
            server.signal(signal.SIGTERM)
            # Stopping (its API closes first) while the worker's delivery is held.
            api = server.api_port
            assert api is not None
            wait_for(lambda: not port_is_open(api), within=15)
        finally:
            peer.release()
        assert server.wait() == 0
        (posted,) = hook.requests
        assert "late@remote.test" in posted.body.decode()
        assert "5.7.1" in posted.body.decode()
        assert '"source":"dsn"' not in server.log.read_text()  # NOTIFY=NEVER held


def test_deliveries_at_once_and_the_schedulers_share_one_grace_at_stop(
    home: Path, peers: Peers
) -> None:
    """Both kinds of delivery in flight when the server is told to stop, both held by
    the relay: they get one ``shutdown_grace`` together, not one after the other, so a
    stop stays within twice the grace (the systemd unit's stop timeout counts on it)."""
    grace = 3.0
    peer = peers.start()
    # later.test's route names a provider mailer too: not relayed at once, but by the
    # scheduler, whose first mailer is the same relay.
    routes = (
        f"[limits]\nshutdown_grace = {grace}\n"
        '[[mailers]]\nname = "grid"\ntype = "sendgrid"\napi_key = "SG.test"\n'
        'base_url = "http://127.0.0.1:9"\n'
        '[[routes]]\nname = "scheduled"\nmailers = ["relay", "grid"]\n'
        '[[routes.conditions]]\nfield = "recipient_domain"\nvalue = "later.test"\n'
    )
    server, _ = start(home, peer, connections=2, extra=routes)
    peer.hold()
    try:
        with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10) as client:
            submit(client, "now")
            assert client.sendmail(SENDER, ["later@later.test"], message("later")) == {}
        wait_for(lambda: peer.held == 2, within=15)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
        took = time.monotonic() - started
    finally:
        peer.release()
    assert grace <= took < 2 * grace - 0.5  # one grace for both, and a little more
    assert "did not stop in time" not in server.log.read_text()


def relayed(peer: SmtpPeer) -> Counter[str]:
    """How many copies of each token the relay got."""
    return tokens((got.data for got in list(peer.received)), SUBJECT)


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(examples(1)))  # each round kills at another moment
def test_kill_9_during_relay_at_once_loses_nothing_and_repeats_only_the_unrecorded(
    home: Path, peers: Peers, round_: int
) -> None:
    peer = peers.start()
    proc, config = start(home, peer, connections=8)
    target = random.Random(round_).randint(40, 160)
    port = proc.ports["submission"]
    acked = kill_all_amid_load(proc, one_per_connection(port, submit), senders=8, target=target)
    assert len(acked) >= target
    db = home / "data" / "postroom.db"
    not_recorded = asyncio.run(unsettled(db, SUBJECT))

    restarted = start_process(config, home / "postroom.log")
    try:
        wait_for(lambda: set(acked) <= set(relayed(peer)), within=60)
        wait_for(
            lambda: not asyncio.run(unsettled(home / "data" / "postroom.db", SUBJECT)), within=60
        )
    finally:
        restarted.signal(signal.SIGTERM)
        restarted.wait()
    assert_at_least_once(acked, relayed(peer), not_recorded)
