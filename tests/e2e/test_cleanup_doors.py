"""Intake's clean-up through the real doors: smtplib on the submission and mx listeners,
the HTTP API (httpx), ``postroom-sendmail`` as a process, and a loopback relay sink that
records the bytes it was sent."""

from __future__ import annotations

import os
import re
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from postroom.directory.apikeys import ApiKeys
from postroom.mailauth.dkim import KeyRing
from tests.conftest import FakeClock
from tests.support.servers import client_context, smtp_client
from tests.support.smtp_peers import SmtpPeer
from tests.support.thread import MakeServer, ServerThread

SENDMAIL = str(Path(sys.executable).with_name("postroom-sendmail"))
MESSAGE_ID = re.compile(r"<[0-9A-Z]{16}\.[0-9a-f]{8}@mail\.test>")
FORGED = b"Authentication-Results: mail.test; dkim=pass header.d=example.test; dmarc=pass\r\n"
# A NUL before the dot: a receiver that drops NUL sees <CRLF>.<CRLF> and a second message.
SMUGGLED = (
    b"From: app@example.test\r\nTo: friend@remote.test\r\nSubject: s\r\n\r\nfirst\r\n"
    b"\x00.\r\nMAIL FROM:<ceo@example.test>\r\nRCPT TO:<victim@remote.test>\r\nDATA\r\n"
    b"Subject: smuggled\r\n\r\nsecond\r\n"
)
BARE_LF = b"From: app@example.test\nTo: friend@remote.test\nSubject: s\n\nfirst\n.\nsecond\r"


@pytest.fixture
def sink() -> Iterator[SmtpPeer]:
    with SmtpPeer("127.0.0.1") as peer:
        yield peer


@pytest.fixture
def relay(make_server: MakeServer, sink: SmtpPeer) -> ServerThread:
    srv: ServerThread = make_server(
        clock=FakeClock(),
        mailers=[
            {"name": "relay", "type": "smtp", "host": "127.0.0.1", "port": sink.port, "tls": "none"}
        ],
        routes=[{"name": "out", "mailers": ["relay"]}],
    )
    srv.add_domain("example.test")
    srv.add_user("app@example.test", "s3cret-pass")
    return srv


def submit(srv: ServerThread, data: bytes | EmailMessage, rcpt: str = "friend@remote.test") -> None:
    with smtp_client(srv.ports["submission"]) as client:
        client.starttls(context=client_context(srv.data_dir))
        client.login("app@example.test", "s3cret-pass")
        if isinstance(data, EmailMessage):
            client.send_message(data, "app@example.test", [rcpt])
        else:
            client.sendmail("app@example.test", [rcpt], data)


def api_post(srv: ServerThread, data: bytes, **params: str) -> httpx.Response:
    key = srv.call(ApiKeys(srv.store, FakeClock()).create("app", ())).token
    return httpx.post(
        f"http://127.0.0.1:{srv.api_port}/api/v1/messages",
        content=data,
        params=params,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "message/rfc822"},
        timeout=10,
    )


def sendmail(srv: ServerThread, data: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    config = srv.data_dir.parent / f"{srv.data_dir.name}.toml"
    config.write_text(f'hostname = "mail.test"\ndata_dir = "{srv.data_dir}"\n')
    return subprocess.run(
        [SENDMAIL, "-i", *args],
        input=data,
        capture_output=True,
        env={**os.environ, "POSTROOM_CONFIG": str(config)},
        timeout=60,
        check=False,
    )


def stored(srv: ServerThread) -> list[bytes]:
    return list(stored_by_id(srv).values())


def stored_by_id(srv: ServerThread) -> dict[str, bytes]:
    messages = srv.call(srv.store.messages(limit=10))
    return {m.id: srv.call(srv.store.read_body(m.id)) or b"" for m in messages}


def smtp_and_api(srv: ServerThread, api_answer: httpx.Response) -> tuple[bytes, bytes]:
    """The two stored messages: the one sent over SMTP, and the one the API answered for."""
    assert api_answer.status_code == 202, api_answer.text
    found = stored_by_id(srv)
    api_mail = found.pop(api_answer.json()["id"])
    (smtp_mail,) = found.values()
    return smtp_mail, api_mail


def head_of(message: bytes) -> str:
    return message.split(b"\r\n\r\n", 1)[0].decode().replace("\r\n ", " ")


def field(message: bytes, name: str) -> list[str]:
    prefix = f"{name.lower()}:"
    return [
        line.split(":", 1)[1].strip()
        for line in head_of(message).split("\r\n")
        if line.lower().startswith(prefix)
    ]


def canonical(data: bytes) -> bool:
    return b"\x00" not in data and data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n")


def test_smtp_submission_without_date_and_message_id_gets_both_as_api_mail_does(
    relay: ServerThread, sink: SmtpPeer
) -> None:
    message = EmailMessage()  # what a Python script sends with smtplib: neither field
    message["From"] = "app@example.test"
    message["To"] = "friend@remote.test"
    message["Subject"] = "Report"
    message.set_content("numbers")
    submit(relay, message)
    answer = api_post(relay, b"From: app@example.test\r\nSubject: s\r\n\r\nb\r\n", rcpt="x@y.test")
    smtp_mail, api_mail = smtp_and_api(relay, answer)
    for body in (smtp_mail, api_mail):
        (date,) = field(body, "Date")
        (message_id,) = field(body, "Message-ID")
        assert MESSAGE_ID.fullmatch(message_id), message_id
        assert date.endswith("+0000")
    assert answer.json()["message_id"] == field(api_mail, "Message-ID")[0]
    assert relay.run_delivery() == 2
    for got in sink.received:  # what the next hop gets
        assert len(field(got.data, "Date")) == len(field(got.data, "Message-ID")) == 1


def test_a_message_id_and_date_of_the_client_are_kept(relay: ServerThread) -> None:
    submit(relay, b"Date: Mon, 1 Jan 2029 00:00:00 +0000\r\nMessage-ID: <own@x.test>\r\n\r\nb\r\n")
    (body,) = stored(relay)
    assert field(body, "Message-ID") == ["<own@x.test>"]
    assert field(body, "Date") == ["Mon, 1 Jan 2029 00:00:00 +0000"]


def test_forged_authentication_results_are_removed_from_submitted_mail(
    relay: ServerThread,
) -> None:
    other = b"Authentication-Results: relay.other.test; spf=pass\r\n"
    submit(relay, FORGED + other + b"From: app@example.test\r\nSubject: s\r\n\r\nb\r\n")
    answer = api_post(relay, FORGED + b"From: app@example.test\r\n\r\nb\r\n", rcpt="x@y.test")
    smtp_mail, api_mail = smtp_and_api(relay, answer)
    assert field(smtp_mail, "Authentication-Results") == ["relay.other.test; spf=pass"]
    assert field(api_mail, "Authentication-Results") == []


def test_bcc_is_removed_from_smtp_submission_and_api_mail(relay: ServerThread) -> None:
    data = (
        b"From: app@example.test\r\nBCC : hidden@remote.test,\r\n\tother@remote.test\r\n\r\nb\r\n"
    )
    submit(relay, data, rcpt="hidden@remote.test")
    answer = api_post(relay, data)
    assert answer.status_code == 202, answer.text
    assert answer.json()["recipients"] == ["hidden@remote.test", "other@remote.test"]
    for body in stored(relay):
        after_received = body[body.index(b"\r\nDate: ") :]  # Received: may say "for <...>"
        assert b"hidden@" not in after_received and b"other@" not in after_received


def test_a_nul_from_the_api_is_refused_and_never_relayed(
    relay: ServerThread, sink: SmtpPeer
) -> None:
    answer = api_post(relay, SMUGGLED)
    assert answer.status_code == 422
    (problem,) = answer.json()["error"]["fields"]
    assert problem["field"] == "body" and "NUL" in problem["message"]
    assert stored(relay) == []
    relay.run_delivery()
    assert sink.received == []


def test_a_nul_through_sendmail_exits_65_and_is_never_relayed(
    relay: ServerThread, sink: SmtpPeer
) -> None:
    done = sendmail(relay, SMUGGLED, "friend@remote.test")
    assert done.returncode == 65  # EX_DATAERR
    (line,) = done.stderr.decode().splitlines()
    assert line.startswith("postroom-sendmail: refused: 554 5.6.0") and "NUL" in line
    assert stored(relay) == []
    relay.run_delivery()
    assert sink.received == []


@pytest.mark.parametrize("door", ["api", "sendmail"])
def test_bare_line_ends_reach_the_next_hop_as_crlf(
    relay: ServerThread, sink: SmtpPeer, door: str
) -> None:
    if door == "api":
        assert api_post(relay, BARE_LF).status_code == 202
    else:
        assert sendmail(relay, BARE_LF, "friend@remote.test").returncode == 0
    (body,) = stored(relay)
    assert canonical(body)
    assert relay.run_delivery() == 1
    (got,) = sink.received
    assert canonical(got.data)
    assert got.data.endswith(b"\r\n\r\nfirst\r\n.\r\nsecond\r\n")  # the dot is text


def test_smtp_still_refuses_bare_line_ends(relay: ServerThread) -> None:
    with pytest.raises(smtplib.SMTPDataError) as refused:
        submit(relay, b"Subject: s\r\n\r\nfirst\n.\nsecond\r\n")
    assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (554, b"5.6.0")


MALFORMED = [
    pytest.param(b"From: app@example.test\r\nno colon here\r\n\r\nbody\r\n", id="no-colon"),
    pytest.param(b"just a body, no header at all\r\n", id="no-header"),
    pytest.param(b" folded\r\nFrom: app@example.test\r\n\r\nbody\r\n", id="leading-fold"),
    pytest.param(b"From : app@example.test\r\nSubject\t: s\r\n\r\nbody\r\n", id="space-colon"),
]


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_headers_get_a_reply_on_submission_with_a_dkim_key(
    relay: ServerThread, data: bytes
) -> None:
    KeyRing(relay.data_dir).generate("example.test", "r1", "rsa", 1024)
    submit(relay, data)  # 250, not a dropped connection
    (body,) = stored(relay)
    assert b"\r\n\r\n" in body and field(body, "Message-ID")
    if b"From: app@" in body.split(b"\r\n\r\n", 1)[0] or b"From : app@" in data:
        assert b"DKIM-Signature:" in body and b"d=example.test" in body
    with smtp_client(relay.ports["submission"]) as client:  # the server still answers
        assert client.noop()[0] == 250


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_headers_get_a_reply_on_the_mx_listener(
    make_server: MakeServer, data: bytes
) -> None:
    srv: ServerThread = make_server()
    srv.add_domain("example.test")
    srv.add_user("user@example.test", "s3cret-pass")
    KeyRing(srv.data_dir).generate("example.test", "r1", "rsa", 1024)
    with smtp_client(srv.ports["mx"]) as client:
        client.ehlo("out.sender.test")
        refused = client.sendmail("bounce@sender.test", ["user@example.test"], data)
        assert refused == {}
    (body,) = stored(srv)
    assert b"Authentication-Results: mail.test;" in body
    assert b"DKIM-Signature" not in body  # mail from outside is never signed
