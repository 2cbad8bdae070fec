"""End to end: submit with smtplib, watch the message arrive at a remote MX (through the
``mx`` mailer and a real DNS server), at a relay with a backup, and in a local Maildir."""

from __future__ import annotations

import email
import email.policy
import mailbox
import signal
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.dns_server import DnsServer
from tests.support.servers import (
    client_context,
    run_cli,
    smtp_client,
    start_process,
    wait_for,
    write_config,
)
from tests.support.smtp_peers import PeerCA, Peers, shared_port
from tests.support.thread import MakeServer, ServerThread

MESSAGE = b"From: app@example.test\r\nTo: friend@remote.test\r\nSubject: Receipt\r\n\r\nThanks!\r\n"


@pytest.fixture
def peers() -> Iterator[Peers]:
    with Peers() as started:
        yield started


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


def delivering_server(make_server: MakeServer, **settings: Any) -> ServerThread:
    """A server that delivers on its own, with example.test and its user app@example.test."""
    srv: ServerThread = make_server(deliver=True, **settings)
    srv.add_domain("example.test")
    srv.add_user("app@example.test", "s3cret-pass")
    return srv


def mx_settings(dns: DnsServer, port: int) -> dict[str, object]:
    """Resolve through the loopback DNS server; MX hosts listen on ``port``."""
    return {
        "dns": {"nameservers": [dns.address], "timeout": 1},
        "mailers": [{"name": "mx", "type": "mx", "port": port, "timeout": 5}],
    }


def submit(srv: ServerThread, rcpt: str, data: bytes = MESSAGE) -> None:
    with smtp_client(srv.ports["submission"]) as client:
        client.starttls(context=client_context(srv.data_dir))
        client.login("app@example.test", "s3cret-pass")
        assert client.sendmail("app@example.test", [rcpt], data) == {}


def test_mx_delivery_through_dns(make_server: MakeServer, peers: Peers, dns: DnsServer) -> None:
    port = shared_port(["127.0.0.2", "127.0.0.3"])
    dead = peers.start("127.0.0.2", port, greeting="421 4.3.2 Not now")
    good = peers.start("127.0.0.3", port)
    dns.add("remote.test", "MX", "10 mx1.remote.test.", "20 mx2.remote.test.")
    dns.add("mx1.remote.test", "A", "127.0.0.2")
    dns.add("mx2.remote.test", "A", "127.0.0.3")
    srv = delivering_server(make_server, **mx_settings(dns, port))
    submit(srv, "friend@remote.test")
    wait_for(lambda: len(good.received) == 1)
    (got,) = good.received
    assert got.sender == "app@example.test"
    assert got.recipients == ("friend@remote.test",)
    assert got.helo == "mail.test"
    assert got.data.replace(b"\r\n", b"\n").endswith(b"Thanks!\n")
    assert b"Received: from client.test" in got.data or b"Received: from " in got.data
    assert dead.received == []
    (message,) = srv.call(srv.store.messages(limit=10))
    wait_for(lambda: srv.statuses(message.id) == ["delivered"])
    attempts = srv.call(srv.store.attempts(message.id))
    assert attempts[-1].mailer == "mx"
    assert attempts[-1].host == "mx2.remote.test"
    assert attempts[-1].ip == "127.0.0.3"
    assert attempts[-1].code == 250


def test_relay_with_backup(make_server: MakeServer, peers: Peers, tmp_path: Path) -> None:
    ca = PeerCA(tmp_path)
    relay = peers.start(
        "127.0.0.1",
        starttls=ca.server_context("localhost"),
        require_starttls=True,
        users={"relay-user": "relay-pw"},
    )
    closed_port = shared_port(["127.0.0.1"])  # nothing listens: connection refused
    srv = delivering_server(
        make_server,
        mailers=[
            {
                "name": "primary",
                "type": "smtp",
                "host": "127.0.0.1",
                "port": closed_port,
                "tls": "none",
                "timeout": 5,
            },
            {
                "name": "backup",
                "type": "smtp",
                "host": "localhost",
                "port": relay.port,
                "tls": "starttls",
                "username": "relay-user",
                "password": "relay-pw",
                "ca_file": ca.ca_file,
                "timeout": 5,
            },
        ],
        routes=[{"name": "everything", "mailers": ["primary", "backup"]}],
    )
    submit(srv, "friend@remote.test")
    wait_for(lambda: len(relay.received) == 1)
    (got,) = relay.received
    assert got.login == "relay-user"
    assert got.tls is not None and got.tls.startswith("TLSv1.")
    (message,) = srv.call(srv.store.messages(limit=10))
    wait_for(lambda: len(srv.call(srv.store.attempts(message.id))) == 2)
    attempts = srv.call(srv.store.attempts(message.id))
    assert [(a.mailer, a.disposition) for a in attempts] == [
        ("primary", "deferred"),
        ("backup", "delivered"),
    ]
    assert attempts[0].code is not None and attempts[0].code // 100 == 4


def test_local_delivery_and_a_bounce_into_maildir(
    make_server: MakeServer, peers: Peers, dns: DnsServer
) -> None:
    port = shared_port(["127.0.0.4"])
    peers.start("127.0.0.4", port, reject_rcpt={"ghost@remote.test": "550 5.1.1 No such user"})
    dns.add("remote.test", "MX", "10 mx.remote.test.")
    dns.add("mx.remote.test", "A", "127.0.0.4")
    srv = delivering_server(make_server, **mx_settings(dns, port))
    # mail to a local user lands in its Maildir
    with smtp_client(srv.ports["mx"]) as client:
        client.sendmail(
            "someone@elsewhere.test", ["app@example.test"], b"Subject: hello local\r\n\r\nhi\r\n"
        )
    box_path = srv.data_dir / "mail" / "example.test" / "app" / "Maildir"
    # the Maildir is made a folder at a time: wait for its last one
    wait_for(
        lambda: (box_path / "cur").is_dir() and len(mailbox.Maildir(box_path, create=False)) == 1
    )
    (local,) = mailbox.Maildir(box_path, factory=None, create=False)
    assert local["Subject"] == "hello local"
    assert local["Delivered-To"] == "app@example.test"
    # a remote refusal comes back as a DSN into the sender's own Maildir
    submit(srv, "ghost@remote.test")
    wait_for(lambda: len(mailbox.Maildir(box_path, create=False)) == 2)
    bounce = next(
        m for m in mailbox.Maildir(box_path, create=False) if m["Subject"] != "hello local"
    )
    report = email.message_from_bytes(bounce.as_bytes(), policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    status = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    text = status.as_string()
    assert "Final-Recipient: rfc822; ghost@remote.test" in text
    assert "Status: 5.1.1" in text
    assert "Remote-MTA: dns; mx.remote.test" in text
    assert "Diagnostic-Code: smtp; 550 5.1.1 No such user" in text
    assert bounce["Return-Path"] == "<>"


def test_kill_9_during_delivery_delivers_after_restart(peers: Peers, tmp_path: Path) -> None:
    peer = peers.start("127.0.0.1")
    peer.hold()  # DATA waits: the message is mid-delivery when we kill the server
    data = tmp_path / "data"
    extra = (
        "[delivery]\nlease = 2\n"
        f'[[mailers]]\nname = "peer"\ntype = "smtp"\nhost = "127.0.0.1"\nport = {peer.port}\n'
        'tls = "none"\ntimeout = 5\n'
        '[[routes]]\nname = "all"\nmailers = ["peer"]\n'
    )
    config = write_config(tmp_path / "postroom.toml", data, extra=extra)
    run = [sys.executable, "-m", "postroom", "--config", str(config)]
    subprocess.run([*run, "domain", "add", "example.test"], check=True, capture_output=True)
    proc = start_process(config, tmp_path / "postroom.log")
    try:
        with smtplib.SMTP("127.0.0.1", proc.ports["mx"], timeout=10) as client:
            client.ehlo("client.test")
            client.sendmail("a@elsewhere.test", ["postmaster@example.test"], MESSAGE)
            # postmaster is local: route it to the peer anyway, the route says so
        wait_for(lambda: peer.held == 1)
        proc.kill()
    finally:
        if proc.process.poll() is None:
            proc.kill()
    peer.release()
    proc = start_process(config, tmp_path / "postroom.log")
    try:
        wait_for(lambda: len(peer.received) >= 1, within=30)
        listed = subprocess.run([*run, "log", "--json"], capture_output=True, text=True, check=True)
        assert '"delivered"' in listed.stdout
    finally:
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0


def test_a_delivery_longer_than_its_lease_is_not_claimed_twice(
    peers: Peers, tmp_path: Path
) -> None:
    peer = peers.start("127.0.0.1")
    peer.hold()  # DATA waits for several leases: the running attempt renews its own
    extra = (
        "[delivery]\nlease = 1\n"
        f'[[mailers]]\nname = "peer"\ntype = "smtp"\nhost = "127.0.0.1"\nport = {peer.port}\n'
        'tls = "none"\ntimeout = 30\n'
        '[[routes]]\nname = "all"\nmailers = ["peer"]\n'
    )
    config = write_config(tmp_path / "postroom.toml", tmp_path / "data", extra=extra)
    run = [sys.executable, "-m", "postroom", "--config", str(config)]
    subprocess.run([*run, "domain", "add", "example.test"], check=True, capture_output=True)
    proc = start_process(config, tmp_path / "postroom.log")
    try:
        with smtplib.SMTP("127.0.0.1", proc.ports["mx"], timeout=10) as client:
            client.sendmail("a@elsewhere.test", ["postmaster@example.test"], MESSAGE)
        wait_for(lambda: peer.held == 1)
        # Four leases go by; without renewal a second attempt would open a second session.
        with pytest.raises(AssertionError):
            wait_for(lambda: peer.connections > 1, within=4)
        peer.release()
        wait_for(lambda: len(peer.received) == 1)
        wait_for(lambda: '"delivered"' in run_cli(config, "log", "--json").stdout)
        assert peer.connections == 1
    finally:
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
