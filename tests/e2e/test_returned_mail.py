"""Returned mail at the mx listener (a loopback client speaking SMTP, no Postfix): a
report to a VERP address is consumed and linked; a forged token is refused like any
unknown address; auto-replies are consumed without an event; a transaction never mixes
bounce addresses with others."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from postroom.feedback import links_for
from postroom.mail.events import EventType
from tests.support.servers import client_context, smtp_client
from tests.support.thread import MakeServer, ServerThread

CORPUS = Path(__file__).parent.parent / "data" / "returned"


@pytest.fixture
def srv(make_server: MakeServer) -> ServerThread:
    server: ServerThread = make_server(bounces={"verp": True})
    server.add_domain("example.test")
    server.add_user("app@example.test", "s3cret-pass")
    return server


def sent_message(srv: ServerThread, rcpt: str) -> str:
    data = f"From: app@example.test\r\nTo: {rcpt}\r\nSubject: Hi\r\n\r\nHello\r\n".encode()
    with smtp_client(srv.ports["submission"]) as client:
        client.starttls(context=client_context(srv.data_dir))
        client.login("app@example.test", "s3cret-pass")
        client.sendmail("app@example.test", [rcpt], data)
    return srv.call(srv.store.messages())[-1].id


def return_path(srv: ServerThread, queue_id: str) -> str:
    return links_for(srv.settings).return_path("app@example.test", queue_id)


def report(name: str, bounce_address: str) -> bytes:
    text = (
        (CORPUS / name)
        .read_bytes()
        .replace(b"bounces+TOKEN@send.example.com", bounce_address.encode())
    )
    return text.replace(b"\n", b"\r\n")


def test_exim_notice_to_a_verp_address_is_consumed_linked_and_suppresses(srv: ServerThread) -> None:
    queue_id = sent_message(srv, "gone@example.org")
    verp = return_path(srv, queue_id)
    assert verp.startswith("bounces+") and verp.endswith("@example.test")

    with smtp_client(srv.ports["mx"]) as client:
        refused = client.sendmail("", [verp], report("exim.eml", verp))
        assert refused == {}

    (event,) = [e for e in srv.call(srv.store.events(queue_id)) if e.type is EventType.BOUNCED]
    assert event.recipient == "gone@example.org" and event.reason == "hard_bounce"
    assert [s.address for s in srv.call(srv.store.suppressions())] == ["gone@example.org"]
    assert srv.call(srv.store.count_messages()) == 1  # nothing queued for the bounce address


def test_forged_token_is_refused_like_any_unknown_address(srv: ServerThread) -> None:
    queue_id = sent_message(srv, "gone@example.org")
    verp = return_path(srv, queue_id)
    local, _, domain = verp.partition("@")
    forged = f"{local[:-1]}{'a' if local[-1] != 'a' else 'b'}@{domain}"

    with (
        smtp_client(srv.ports["mx"]) as client,
        pytest.raises(smtplib.SMTPRecipientsRefused) as refused,
    ):
        client.sendmail("", [forged], report("exim.eml", forged))

    ((code, _),) = refused.value.recipients.values()
    assert code == 550
    assert srv.call(srv.store.suppressions()) == []


def test_auto_reply_is_consumed_without_an_event(srv: ServerThread) -> None:
    queue_id = sent_message(srv, "jane@example.net")
    verp = return_path(srv, queue_id)

    with smtp_client(srv.ports["mx"]) as client:
        assert client.sendmail("jane@example.net", [verp], report("vacation.eml", verp)) == {}

    assert [e.type for e in srv.call(srv.store.events(queue_id))] == [EventType.QUEUED]
    assert srv.call(srv.store.suppressions()) == []
    assert srv.call(srv.store.count_messages()) == 1


def test_a_transaction_never_mixes_bounce_addresses_with_others(srv: ServerThread) -> None:
    queue_id = sent_message(srv, "gone@example.org")
    verp = return_path(srv, queue_id)

    with smtp_client(srv.ports["mx"]) as client:
        client.ehlo()
        client.mail("")
        assert client.rcpt("app@example.test")[0] == 250
        code, text = client.rcpt(verp)
        assert (code, text[:5]) == (452, b"4.5.3")
        client.rset()
        client.mail("")
        assert client.rcpt(verp)[0] == 250
        assert client.rcpt("app@example.test")[0] == 452


def test_without_verp_a_report_is_linked_by_the_message_id_postroom_wrote(
    make_server: MakeServer,
) -> None:
    srv: ServerThread = make_server(bounces={"domain": "example.test"})
    srv.add_domain("example.test")
    srv.add_user("app@example.test", "s3cret-pass")
    queue_id = sent_message(srv, "gone@example.org")
    stored = srv.call(srv.store.read_body(queue_id))
    assert stored is not None
    message_id = next(
        line.split(b":", 1)[1].strip().decode()
        for line in stored.split(b"\r\n")
        if line.lower().startswith(b"message-id:")
    )
    assert message_id.startswith(f"<{queue_id}.")
    notice = report("exim.eml", "bounces@example.test").replace(
        b"<invoice.7@send.example.com>", message_id.encode()
    )

    with smtp_client(srv.ports["mx"]) as client:
        assert client.sendmail("", ["bounces@example.test"], notice) == {}

    (event,) = [e for e in srv.call(srv.store.events(queue_id)) if e.type is EventType.BOUNCED]
    assert event.recipient == "gone@example.org"
