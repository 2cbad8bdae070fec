"""End to end: a route ``ses -> sendgrid -> mx``. SES answers 503, SendGrid 429, and the
mx mailer delivers to a loopback SMTP peer found through the loopback DNS server: three
attempts in one try, the log saying who delivered, and no key in any log line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from tests.delivery.providers.fakes import SendgridFake, SesFake
from tests.e2e.test_delivery_e2e import delivering_server, dns, peers, submit
from tests.support.dns_server import DnsServer
from tests.support.http_fake import FakeHttp, Reply, serve
from tests.support.servers import wait_for
from tests.support.smtp_peers import Peers, shared_port
from tests.support.thread import MakeServer

__all__ = ["dns", "peers"]  # fixtures shared with the delivery tests

SENDGRID_KEY = "SG.e2e-secret-key-0123456789"


@pytest.fixture
def ses() -> Iterator[tuple[SesFake, FakeHttp]]:
    fake = SesFake(replies=[Reply.json(503, {"message": "Service Unavailable"})])
    with serve(fake) as server:
        yield fake, server


@pytest.fixture
def sendgrid() -> Iterator[tuple[SendgridFake, FakeHttp]]:
    throttled = {"errors": [{"field": None, "message": "too many requests"}]}
    fake = SendgridFake(key=SENDGRID_KEY, replies=[Reply.json(429, throttled)])
    with serve(fake) as server:
        yield fake, server


def test_ses_then_sendgrid_then_mx_in_one_try(
    make_server: MakeServer,
    *,
    peers: Peers,
    dns: DnsServer,
    ses: tuple[SesFake, FakeHttp],
    sendgrid: tuple[SendgridFake, FakeHttp],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("POSTROOM_TEST_SENDGRID_KEY", SENDGRID_KEY)
    port = shared_port(["127.0.0.2"])
    mx = peers.start("127.0.0.2", port)
    dns.add("remote.test", "MX", "10 mx.remote.test.")
    dns.add("mx.remote.test", "A", "127.0.0.2")
    (ses_fake, ses_server), (sg_fake, sg_server) = ses, sendgrid
    caplog.set_level(logging.INFO)
    srv = delivering_server(
        make_server,
        dns={"nameservers": [dns.address], "timeout": 1},
        mailers=[
            {"name": "mx", "type": "mx", "port": port, "timeout": 5},
            {
                "name": "ses",
                "type": "ses",
                "region": ses_fake.region,
                "base_url": ses_server.url,
                "access_key_id": ses_fake.access_key_id,
                "api_key": ses_fake.secret,
            },
            {
                "name": "sendgrid",
                "type": "sendgrid",
                "base_url": sg_server.url,
                "api_key_env": "POSTROOM_TEST_SENDGRID_KEY",
            },
        ],
        routes=[{"name": "providers", "mailers": ["ses", "sendgrid", "mx"]}],
    )
    submit(srv, "friend@remote.test")
    wait_for(lambda: len(mx.received) == 1)
    (message,) = srv.call(srv.store.messages(limit=10))
    wait_for(lambda: len(srv.call(srv.store.attempts(message.id))) == 3)
    attempts = srv.call(srv.store.attempts(message.id))
    assert [(a.mailer, a.disposition, a.code) for a in attempts] == [
        ("ses", "deferred", 451),
        ("sendgrid", "deferred", 451),
        ("mx", "delivered", 250),
    ]
    assert len({a.at for a in attempts}) == 1  # one try
    assert "HTTP 503" in attempts[0].text and "HTTP 429" in attempts[1].text
    assert ses_fake.problems == [] and sg_fake.problems == []
    assert len(ses_server.requests) == 1 and len(sg_server.requests) == 1
    assert mx.received[0].recipients == ("friend@remote.test",)

    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "postroom.mail"]
    tried = [
        (line["mailer"], line["disposition"], line["status"])
        for line in lines
        if line["event"] == "delivery.attempt"
    ]
    assert tried == [
        ("ses", "deferred", "delivered"),
        ("sendgrid", "deferred", "delivered"),
        ("mx", "delivered", "delivered"),
    ]
    assert SENDGRID_KEY not in caplog.text
    assert ses_fake.secret not in caplog.text
