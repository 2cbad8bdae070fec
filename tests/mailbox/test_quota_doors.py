"""Quotas through intake, at every door: SMTP RCPT and end of DATA, the HTTP API, and
the local mailer for a message that fits some recipients but not others."""

from __future__ import annotations

import smtplib

import httpx

from tests.support.thread import MakeServer, ServerThread

BODY = b"From: alice@example.com\r\nSubject: hi\r\n\r\n" + b"x" * 2000 + b"\r\n"


def _server(make_server: MakeServer) -> ServerThread:
    server = make_server(mailboxes={"default_quota": "1K"})
    server.add_domain("example.test")
    for user in ("full", "roomy"):
        server.add_user(f"{user}@example.test", "pw-123456")
    roomy = server.server.mailboxes.account("example.test", "roomy")
    server.call(roomy.set_quota(0))  # no limit for this one
    return server


def test_smtp_refuses_at_end_of_data_only_when_no_recipient_has_room(
    make_server: MakeServer,
) -> None:
    server = _server(make_server)
    with smtplib.SMTP("127.0.0.1", server.ports["mx"], timeout=10) as smtp:
        smtp.ehlo()
        smtp.mail("alice@example.com")
        assert smtp.rcpt("full@example.test")[0] == 250  # not full yet: it may be small
        code, reply = smtp.data(BODY)
        assert (code, reply[:5]) == (552, b"5.2.2")
        smtp.mail("alice@example.com")
        smtp.rcpt("full@example.test")
        smtp.rcpt("roomy@example.test")
        assert smtp.data(BODY)[0] == 250  # it fits roomy's
    assert server.run_delivery() == 1
    full = server.call(server.server.mailboxes.account("example.test", "full").status("INBOX"))
    roomy = server.call(server.server.mailboxes.account("example.test", "roomy").status("INBOX"))
    assert (full.messages, roomy.messages) == (0, 1)  # bounced for full (5.2.2), kept for roomy


def test_the_api_gets_the_same_answer(make_server: MakeServer) -> None:
    server = _server(make_server)
    token = server.create_api_key("app")
    answer = httpx.post(
        f"http://127.0.0.1:{server.api_port}/api/v1/messages",
        headers={"Authorization": f"Bearer {token}"},
        json={
            "from": "app@example.com",
            "to": ["full@example.test"],
            "subject": "hi",
            "text": "x" * 2000,
        },
        timeout=10,
    )
    # 507 Insufficient Storage: the recipient's mailbox, not the request, is too big.
    assert answer.status_code == 507, answer.text
    error = answer.json()["error"]
    assert (error["code"], error["message"]) == ("insufficient_storage", "Mailbox full")
    assert error["fields"] == [{"field": "to", "message": "Mailbox full"}]


def test_a_limit_set_after_rcpt_looked_at_the_mailbox_counts_at_once(
    make_server: MakeServer,
) -> None:
    """RCPT remembers which mailbox an address names, never what its quota was: a limit
    written into ``maildirsize`` by another process (the CLI) holds for the next message."""
    server = _server(make_server)
    with smtplib.SMTP("127.0.0.1", server.ports["mx"], timeout=10) as smtp:
        smtp.ehlo()
        smtp.mail("alice@example.com")
        smtp.rcpt("roomy@example.test")
        assert smtp.data(BODY)[0] == 250  # no limit: it fits
        cli_account = server.server.mailboxes.account("example.test", "roomy")
        server.call(cli_account.set_quota(1024))
        smtp.mail("alice@example.com")
        smtp.rcpt("roomy@example.test")
        code, reply = smtp.data(BODY)
        assert (code, reply[:5]) == (552, b"5.2.2")
