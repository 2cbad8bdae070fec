"""End to end against Postfix as the remote MX: mail to an unknown user there is
accepted, bounced by Postfix with a real RFC 3464 report to postroom's VERP return
path, consumed at postroom's mx listener, linked to the original message and recipient,
recorded as a ``bounced`` event, and the address suppressed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from postroom.mail.events import EventOrigin, EventType, MailEvent
from postroom.store.models import SuppressionReason
from tests.support.dns_server import DnsServer
from tests.support.postfix import POSTFIX, postfix_mx
from tests.support.servers import client_context, free_port, smtp_client, wait_for
from tests.support.thread import MakeServer, ServerThread

pytestmark = pytest.mark.skipif(
    not os.path.exists(POSTFIX) or shutil.which("postconf") is None or os.geteuid() != 0,
    reason="needs Postfix and root to run a private instance",
)

FREE = 0


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


def test_unknown_user_at_postfix_comes_back_linked_and_suppresses_the_address(
    make_server: MakeServer, dns: DnsServer
) -> None:
    mx_port = free_port()
    with postfix_mx(domain="remote.test", relay_port=mx_port) as (
        postfix_port,
        maillog,
    ):
        dns.add("remote.test", "MX", "10 mx.remote.test.")
        dns.add("mx.remote.test", "A", "127.0.0.1")
        srv: ServerThread = make_server(
            deliver=True,
            listeners=[
                {"address": "127.0.0.1", "port": mx_port, "role": "mx"},
                {"address": "127.0.0.1", "port": FREE, "role": "submission"},
            ],
            dns={"nameservers": [dns.address], "timeout": 1},
            mailers=[{"name": "mx", "type": "mx", "port": postfix_port, "timeout": 10}],
            bounces={"verp": True},
        )
        srv.add_domain("example.test")
        srv.add_user("app@example.test", "s3cret-pass")

        queue_id = _send(srv, "nobody-here@remote.test")
        # Postfix took it (250), then bounced it to bounces+<token>@example.test.
        wait_for(lambda: srv.statuses(queue_id) == ["delivered"], within=30)
        wait_for(lambda: bool(_bounced(srv, queue_id)), within=60)

        (event,) = _bounced(srv, queue_id)
        assert event.recipient == "nobody-here@remote.test"
        assert event.origin is EventOrigin.BOUNCE
        assert event.reply.startswith("5.1.1 ")
        assert ("reporting_mta", "postfix.remote.test") in event.details
        assert "bounces+" in maillog.read_text()  # the DSN went to the VERP path
        listed = srv.call(srv.store.suppressions(address="nobody-here@remote.test"))
        assert [(s.reason, s.scope) for s in listed] == [(SuppressionReason.HARD_BOUNCE, "")]
        # The DSN was consumed: no message was queued for the bounce address.
        assert srv.call(srv.store.count_messages()) == 1

        again = _send(srv, "nobody-here@remote.test")
        assert srv.statuses(again) == ["rejected"]
        (rejected,) = [e for e in srv.call(srv.store.events(again)) if e.type is EventType.REJECTED]
        assert rejected.reason == "suppressed"
        srv.run_delivery()
        assert srv.call(srv.store.attempts(again)) == []  # never tried


def _send(srv: ServerThread, rcpt: str) -> str:
    message = (
        f"From: app@example.test\r\nTo: {rcpt}\r\nSubject: Welcome\r\n\r\nHello!\r\n"
    ).encode()
    with smtp_client(srv.ports["submission"]) as client:
        client.starttls(context=client_context(srv.data_dir))
        client.login("app@example.test", "s3cret-pass")
        client.sendmail("app@example.test", [rcpt], message)
        reply = client.noop()
    assert reply[0] == 250
    return srv.call(srv.store.messages())[-1].id


def _bounced(srv: ServerThread, queue_id: str) -> list[MailEvent]:
    events = srv.call(srv.store.events(queue_id))
    return [e for e in events if e.type is EventType.BOUNCED]
