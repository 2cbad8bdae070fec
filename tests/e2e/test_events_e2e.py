"""End to end: a hard bounce from a loopback MX suppresses the address and the next send
to it is rejected without an attempt, every event reaching a signed webhook; and events
committed with an attempt survive a kill -9 before their webhook was sent."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.events.signing import verify
from tests.e2e.test_delivery_e2e import delivering_server, mx_settings, submit
from tests.support.dns_server import DnsServer
from tests.support.http_fake import Reply, Request, serve
from tests.support.servers import (
    cli_out,
    client_context,
    smtp_client,
    start_process,
    wait_for,
    write_config,
)
from tests.support.smtp_peers import Peers, shared_port
from tests.support.thread import MakeServer

SECRET = "e2e-webhook-secret"


class Receiver:
    """A webhook receiver: keeps each event whose signature verifies, refuses the rest."""

    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []
        self.refused = 0

    def __call__(self, request: Request) -> Reply:
        if not verify(SECRET, request.headers, request.body, now=time.time()):
            self.refused += 1
            return Reply(401)
        self.events.append(request.json())
        return Reply(204)

    def types(self, queue_id: str) -> list[tuple[object, object]]:
        return [(e["type"], e["recipient"]) for e in self.events if e["queue_id"] == queue_id]


@pytest.fixture
def peers() -> Iterator[Peers]:
    with Peers() as started:
        yield started


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


def test_a_hard_bounce_suppresses_and_the_next_send_is_rejected_without_an_attempt(
    make_server: MakeServer, peers: Peers, dns: DnsServer
) -> None:
    port = shared_port(["127.0.0.2"])
    mx = peers.start("127.0.0.2", port, reject_rcpt={"gone@remote.test": "550 5.1.1 No such user"})
    dns.add("remote.test", "MX", "10 mx.remote.test.")
    dns.add("mx.remote.test", "A", "127.0.0.2")
    receiver = Receiver()
    with serve(receiver) as http:
        hook = {"name": "app", "url": f"{http.url}/events", "secret": SECRET,
                "events": ["queued", "bounced", "rejected"]}  # fmt: skip
        srv = delivering_server(make_server, webhooks=[hook], **mx_settings(dns, port))
        submit(srv, "gone@remote.test")
        (first,) = srv.call(srv.store.messages(limit=10))
        wait_for(lambda: srv.statuses(first.id) == ["bounced"])
        wait_for(lambda: bool(srv.call(srv.store.suppressed(["gone@remote.test"], None))))
        [entry] = srv.call(srv.store.suppressions())
        assert (entry.address, entry.scope, entry.reason.value, entry.source) == (
            "gone@remote.test",
            "",
            "hard_bounce",
            f"delivery {first.id}",
        )
        rcpts_before = mx.mail_commands
        submit(srv, "gone@remote.test")
        second = next(m for m in srv.call(srv.store.messages(limit=10)) if m.id > first.id
                      and m.sender == "app@example.test")  # fmt: skip
        assert srv.statuses(second.id) == ["rejected"]
        assert srv.call(srv.store.attempts(second.id)) == []
        wait_for(lambda: ("rejected", "gone@remote.test") in receiver.types(second.id))
        wait_for(lambda: ("bounced", "gone@remote.test") in receiver.types(first.id))
    assert receiver.types(first.id)[0] == ("queued", "gone@remote.test")
    assert receiver.refused == 0
    assert mx.mail_commands == rcpts_before  # no second try at the MX
    rejected = next(e for e in receiver.events if e["type"] == "rejected")
    assert rejected["reason"] == "suppressed"
    assert rejected["reply"] == (
        "550 5.7.1 <gone@remote.test>: recipient is on the suppression list (hard_bounce)"
    )
    bounced = next(e for e in receiver.events if e["type"] == "bounced")
    assert bounced["reply"] == "550 5.1.1 No such user"
    assert bounced["mailer"] == "mx"


def test_events_committed_before_a_kill_9_reach_the_webhook_after_the_restart(
    tmp_path: Path,
) -> None:
    port = shared_port(["127.0.0.1"])  # nobody listens yet: the first POST is refused
    config = write_config(
        tmp_path / "postroom.toml",
        tmp_path / "data",
        extra=f'[[webhooks]]\nname = "app"\nurl = "http://127.0.0.1:{port}/"\n'
        f'secret = "{SECRET}"\n',
    )
    cli_out(config, "domain", "add", "example.test")
    cli_out(config, "user", "add", "bob@example.test", stdin="bob-password\nbob-password\n")
    proc = start_process(config, tmp_path / "postroom.log")
    try:
        with smtp_client(proc.ports["submission"]) as client:
            client.starttls(context=client_context(tmp_path / "data"))
            client.login("bob@example.test", "bob-password")
            message = b"From: bob@example.test\r\nSubject: hi\r\n\r\nx\r\n"
            client.sendmail("bob@example.test", ["bob@example.test"], message)

        def committed_and_tried() -> bool:
            history = json.loads(cli_out(config, "webhook", "history", "--json"))
            types = {d["event"]["type"] for d in history}
            return "delivered" in types and any(d["attempts"] >= 1 for d in history)

        # Delivered, its events committed with the attempt; the first POST was refused and
        # the delivered event waits behind the queued one (one message's events in order).
        wait_for(committed_and_tried)
    finally:
        proc.kill()  # kill -9
    receiver = Receiver()
    with serve(receiver, port):
        proc = start_process(config, tmp_path / "postroom.log")
        try:
            wait_for(lambda: any(e["type"] == "delivered" for e in receiver.events), within=30)
        finally:
            proc.kill()
    assert [(e["type"], e["recipient"]) for e in receiver.events] == [
        ("queued", "bob@example.test"),
        ("delivered", "bob@example.test"),
    ]
    assert receiver.refused == 0
