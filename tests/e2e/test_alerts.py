"""Alerts end to end: a mailer pointed at a closed port fails every attempt; after
``failing_for`` one Slack-format alert reaches a loopback incoming webhook and one
alert email is queued, however many messages keep failing."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Generator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from postroom.events.forward import AttemptForwarder
from postroom.runtime import Server
from tests.conftest import FakeClock
from tests.support.attempts import attempt
from tests.support.http_fake import FakeHttp, Reply, Request, serve
from tests.support.servers import (
    client_context,
    free_port,
    loopback_settings,
    smtp_client,
    wait_for,
)
from tests.support.thread import MakeServer, ServerThread


@pytest.fixture
def slack() -> Iterator[FakeHttp]:
    def answer(request: Request) -> Reply:
        return Reply(200, b"ok")

    with serve(answer) as fake:
        yield fake


def test_a_mailer_failing_for_minutes_raises_one_slack_and_one_email_alert(
    make_server: MakeServer, slack: FakeHttp
) -> None:
    clock = FakeClock()
    relay = {
        "name": "relay",
        "type": "smtp",
        "host": "127.0.0.1",
        "port": free_port(),
    }  # nothing listens
    srv: ServerThread = make_server(
        clock=clock,
        mailers=[{**relay, "tls": "none", "timeout": 5}],
        routes=[{"name": "out", "mailers": ["relay"]}],
        alerts=[
            {
                "name": "chat",
                "format": "slack",
                "url": f"{slack.url}/hook",
                "on": ["mailer_failing"],
            },
            {
                "name": "ops",
                "format": "email",
                "to": ["ops@example.test"],
                "on": ["mailer_failing"],
            },
        ],
    )
    srv.add_domain("example.test")
    srv.add_user("app@example.test", "s3cret-pass")
    srv.add_user("ops@example.test", "s3cret-pass")
    for n in range(5):
        submit(srv, f"friend{n}@remote.test")

    for _ in range(4):  # 5 messages, tried every 5 minutes: 20 failed attempts
        srv.call(srv.store.retry_now(None, clock.now))
        srv.run_delivery()
        clock.advance(300)

    wait_for(lambda: len(slack.requests) == 1)
    wait_for(lambda: len(alert_emails(srv)) == 1)
    (posted,) = slack.requests
    assert posted.path == "/hook"
    body = posted.json()
    assert body["text"] == "postroom on mail.test: Mailer relay is failing"
    assert "has failed for 10 min" in body["blocks"][1]["text"]["text"]
    (alert,) = alert_emails(srv)
    assert alert["Auto-Submitted"] == "auto-generated"
    assert alert["To"] == "ops@example.test"
    # More failures (the alert email's own among them) raise nothing new.
    srv.call(srv.store.retry_now(None, clock.now))
    srv.run_delivery()
    assert srv.server.alerts is not None
    wait_for(lambda: srv.server.alerts is not None and srv.server.alerts.idle)
    assert len(slack.requests) == 1 and len(alert_emails(srv)) == 1


def submit(srv: ServerThread, rcpt: str) -> None:
    data = f"From: app@example.test\r\nTo: {rcpt}\r\nSubject: Hi\r\n\r\nHello\r\n".encode()
    with smtp_client(srv.ports["submission"]) as client:
        client.starttls(context=client_context(srv.data_dir))
        client.login("app@example.test", "s3cret-pass")
        assert client.sendmail("app@example.test", [rcpt], data) == {}


def alert_emails(srv: ServerThread) -> list[EmailMessage]:
    found: list[EmailMessage] = []
    for stored in srv.call(srv.store.messages()):
        if stored.source_kind != "dsn":
            continue
        data = srv.call(srv.store.read_body(stored.id))
        assert data is not None
        message = email.message_from_bytes(data, policy=email.policy.SMTP)
        assert isinstance(message, EmailMessage)
        if "is failing" in str(message["Subject"]):
            found.append(message)
    return found


class _Stopping:
    """The accept workers' stop as the primary's ``stop`` awaits it: says when it is
    awaited, and ends when told to."""

    def __init__(self) -> None:
        self.awaited = asyncio.Event()
        self.ended = asyncio.get_running_loop().create_future()

    def __await__(self) -> Generator[Any, None, None]:
        self.awaited.set()
        yield from self.ended.__await__()


async def test_a_stopping_primary_hears_its_workers_to_the_end_and_sends_the_last_alerts(
    tmp_path: Path, slack: FakeHttp
) -> None:
    """Workers deliver until they have stopped: what they tell of their attempts must
    still raise alerts, and alerts already queued go out before the alert task stops."""
    alert = {"name": "ops", "format": "webhook", "url": f"{slack.url}/a", "on": ["bounced"]}
    settings = loopback_settings(tmp_path / "data", workers=2, alerts=[alert])
    server = Server(settings)
    await server.start()
    workers = _Stopping()
    stopping = asyncio.create_task(server.stop(workers))
    try:
        async with asyncio.timeout(10):
            await workers.awaited.wait()
        forwarder = AttemptForwarder(settings.data_dir)  # a worker's last attempt
        try:
            forwarder(attempt(recipient="told@remote.test"))
        finally:
            forwarder.close()
        await asyncio.to_thread(wait_for, lambda: bool(slack.requests), 10)
        assert server.alerts is not None
        # Queued as the workers end; another mailer's, so its quiet time is its own.
        server.alerts.on_event(attempt(recipient="last@remote.test", mailer="backup"))
        workers.ended.set_result(None)
        await stopping
    finally:
        if not workers.ended.done():
            workers.ended.set_result(None)
        await stopping
    bodies = [r.body.decode() for r in slack.requests]
    assert len(bodies) == 2
    assert "told@remote.test" in bodies[0] and "last@remote.test" in bodies[1]
