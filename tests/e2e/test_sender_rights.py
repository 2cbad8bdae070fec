"""Who may send as whom, through every door: SMTP (465-style implicit TLS, 587, and
relay_networks on the mx port), the HTTP API, postroom-sendmail and `postroom send`.

Each door must refuse an envelope sender or an author field (From, Sender, Resent-From,
Resent-Sender, in any spelling) outside the principal's domains, store nothing and sign
nothing; and DKIM must sign only as a From domain the principal may use."""

from __future__ import annotations

import logging
import os
import smtplib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from postroom.directory.apikeys import ApiKeys
from postroom.directory.users import Users
from postroom.mailauth.dkim import KeyRing
from tests.support.servers import client_context, smtp_client, write_config
from tests.support.thread import ServerThread

SENDMAIL = str(Path(sys.executable).with_name("postroom-sendmail"))
Make = Callable[..., ServerThread]


def stored_messages(server: ServerThread) -> list[bytes]:
    async def read() -> list[bytes]:
        store = server.store
        bodies = [await store.read_body(m.id) for m in await store.messages(limit=100)]
        return [b for b in bodies if b is not None]

    return server.call(read())


def signed_domains(data: bytes) -> list[str]:
    head = data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ")
    found = []
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"dkim-signature:"):
            tags = dict(
                t.strip().split(b"=", 1) for t in line.split(b":", 1)[1].split(b";") if b"=" in t
            )
            found.append(tags[b"d"].decode())
    return found


@pytest.fixture
def ours(make_server: Make) -> ServerThread:
    """example.com is ours and has a DKIM key; c@other.org may send as other.org only."""
    server = make_server()
    server.add_domain("example.com")
    server.add_user("c@other.org", "pw-other-1")
    server.add_user("app@example.com", "pw-app-1")
    KeyRing(server.data_dir).generate("example.com", "s1", "ed25519")
    return server


def implicit_tls(server: ServerThread) -> smtplib.SMTP_SSL:
    client = smtplib.SMTP_SSL(
        "127.0.0.1",
        server.ports["submissions"],
        context=client_context(server.data_dir),
        timeout=10,
    )
    client.ehlo("client.test")
    return client


def transaction(client: smtplib.SMTP, sender: str, data: bytes) -> tuple[int, bytes]:
    client.rset()
    assert client.mail(sender)[0] == 250
    assert client.rcpt("someone@remote.test")[0] == 250
    return client.data(data)


CEO = b"From: ceo@example.com\r\nTo: someone@remote.test\r\nSubject: Pay\r\n\r\nPay now.\r\n"


# -- SMTP AUTH users --------------------------------------------------------------------
def test_a_user_limited_to_other_org_cannot_send_or_sign_as_example_com_over_implicit_tls(
    ours: ServerThread,
) -> None:
    client = implicit_tls(ours)
    try:
        client.login("c@other.org", "pw-other-1")
        for sender in ("c@other.org", "<>"):  # the null sender gets the same header check
            code, text = transaction(client, sender, CEO)
            assert (code, text[:5]) == (553, b"5.7.1"), (sender, text)
            assert b"From" in text
        assert stored_messages(ours) == []  # nothing stored, so nothing signed
        own = CEO.replace(b"ceo@example.com", b"c@other.org")
        assert transaction(client, "c@other.org", own)[0] == 250
    finally:
        client.quit()
    [message] = stored_messages(ours)
    assert signed_domains(message) == []  # other.org has no key; example.com is not its


@pytest.mark.parametrize(
    "author",
    [
        b"From : ceo@example.com\r\n",
        b"FROM:ceo@example.com\r\n",
        b"From:\r\n\tThe CEO\r\n <ceo@example.com>\r\n",
        b"From: =?utf-8?q?C=C3=A9o?= <ceo@example.com>\r\n",
        b"From: c@other.org, ceo@example.com\r\n",
        b"From: board: c@other.org, ceo@example.com;\r\n",
        b"From: c@other.org\r\nFrom: ceo@example.com\r\n",
        b"From: c@other.org\r\nSender: ceo@example.com\r\n",
        b"From: c@other.org\r\nResent-From: ceo@example.com\r\n",
        b"From: c@other.org\r\nResent-Sender: ceo@example.com\r\n",
        b"From: <ceo@example.com\r\n",  # unreadable from a limited sender: refused
    ],
)
def test_no_spelling_of_an_author_field_gets_past_the_rule(
    ours: ServerThread, author: bytes
) -> None:
    with smtp_client(ours.ports["submission"]) as client:
        client.starttls(context=client_context(ours.data_dir))
        client.ehlo("client.test")
        client.login("c@other.org", "pw-other-1")
        data = author + b"To: someone@remote.test\r\nSubject: x\r\n\r\nbody\r\n"
        code, text = transaction(client, "c@other.org", data)
    assert (code, text[:5]) == (553, b"5.7.1"), text
    assert stored_messages(ours) == []


def test_a_user_sends_as_its_own_domain_signed_and_any_sender_users_as_any(
    ours: ServerThread,
) -> None:
    ours.call(Users(ours.store).add("relay@example.com", "pw-relay-1", any_sender=True))
    with smtp_client(ours.ports["submission"]) as client:
        client.starttls(context=client_context(ours.data_dir))
        client.ehlo("client.test")
        client.login("app@example.com", "pw-app-1")
        assert transaction(client, "app@example.com", CEO)[0] == 250
        client.rset()
        code, text = client.mail("app@other.org")
        assert (code, text[:5]) == (553, b"5.7.1")  # the envelope sender, at MAIL FROM
    with smtp_client(ours.ports["submission"]) as client:
        client.starttls(context=client_context(ours.data_dir))
        client.ehlo("client.test")
        client.login("relay@example.com", "pw-relay-1")
        foreign = CEO.replace(b"ceo@example.com", b"news@elsewhere.test")
        assert transaction(client, "news@elsewhere.test", foreign)[0] == 250
    signed, foreign_one = stored_messages(ours)
    assert signed_domains(signed) == ["example.com"]
    assert signed_domains(foreign_one) == []


# -- the HTTP API -------------------------------------------------------------------------
def api_post(server: ServerThread, token: str, raw: bytes, mail_from: str) -> httpx.Response:
    url = f"http://127.0.0.1:{server.api_port}/api/v1/messages"
    return httpx.post(
        url,
        content=raw,
        params={"mail_from": mail_from, "rcpt": "a@remote.test"},
        headers={"Authorization": f"Bearer {token}", "Content-Type": "message/rfc822"},
        timeout=10,
    )


@pytest.mark.parametrize(
    ("author", "field"),
    [
        (b"From : ceo@other.org\r\n", "From"),
        (b"From: app@example.com\r\nSender: ceo@other.org\r\n", "Sender"),
        (b"From: app@example.com\r\nResent-From: ceo@other.org\r\n", "Resent-From"),
        (b"From: app@example.com\r\nRESENT-SENDER : ceo@other.org\r\n", "Resent-Sender"),
    ],
)
def test_an_api_key_limited_to_example_com_gets_403_naming_the_header(
    ours: ServerThread, author: bytes, field: str
) -> None:
    token = ours.call(ApiKeys(ours.store).create("shop", ["example.com"])).token
    raw = author + b"To: a@remote.test\r\nSubject: x\r\n\r\nbody\r\n"
    answer = api_post(ours, token, raw, "bounces@example.com")
    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    assert error["code"] == "forbidden"
    assert error["fields"][0]["field"] == field
    assert field in error["message"]
    assert stored_messages(ours) == []


def test_an_api_key_sends_as_the_local_domains_by_default_and_is_signed(
    ours: ServerThread,
) -> None:
    token = ours.call(ApiKeys(ours.store).create("app")).token
    raw = b"From: app@example.com\r\nTo: a@remote.test\r\nSubject: x\r\n\r\nbody\r\n"
    assert api_post(ours, token, raw, "app@example.com").status_code == 202
    foreign = raw.replace(b"app@example.com", b"app@other.org")
    answer = api_post(ours, token, foreign, "app@other.org")
    assert answer.status_code == 403
    assert answer.json()["error"]["fields"][0]["field"] == "from"  # the envelope sender
    [message] = stored_messages(ours)
    assert signed_domains(message) == ["example.com"]


# -- postroom-sendmail and `postroom send` -------------------------------------------------
def local_config(server: ServerThread, tmp_path: Path, extra: str = "") -> Path:
    return write_config(tmp_path / "postroom.toml", server.data_dir, extra=extra)


def sendmail(config: Path, *args: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "POSTROOM_CONFIG": str(config)}
    return subprocess.run(
        [SENDMAIL, *args], input=stdin, capture_output=True, env=env, timeout=60, check=False
    )


def test_sendmail_refuses_an_author_outside_the_local_domains_with_exit_77(
    ours: ServerThread, tmp_path: Path
) -> None:
    config = local_config(ours, tmp_path)
    forged = b"From: ceo@other.org\nTo: a@remote.test\nSubject: x\n\nbody\n"
    done = sendmail(config, "-i", "a@remote.test", stdin=forged)
    assert done.returncode == 77
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and "553 5.7.1 From" in lines[0], lines
    done = sendmail(config, "-i", "-f", "x@other.org", "a@remote.test", stdin=b"Subject: x\n\nb\n")
    assert done.returncode == 77
    assert stored_messages(ours) == []


def test_sendmail_mail_is_dkim_signed_like_smtp_mail(ours: ServerThread, tmp_path: Path) -> None:
    config = local_config(ours, tmp_path)
    message = b"From: Shop <shop@example.com>\nTo: a@remote.test\nSubject: x\n\nbody\n"
    done = sendmail(config, "-i", "a@remote.test", stdin=message)
    assert done.returncode == 0, done.stderr
    plain = sendmail(config, "-i", "a@remote.test", stdin=b"Subject: from the host\n\nb\n")
    assert plain.returncode == 0, plain.stderr  # <user>@<hostname> is always allowed
    signed, unsigned = stored_messages(ours)
    assert signed_domains(signed) == ["example.com"]
    assert signed_domains(unsigned) == []  # mail.test has no key


def test_sendmail_senders_are_widened_by_the_config(ours: ServerThread, tmp_path: Path) -> None:
    config = local_config(ours, tmp_path, '[senders.sendmail]\nsender_domains = ["other.org"]\n')
    forged = b"From: ceo@other.org\nTo: a@remote.test\nSubject: x\n\nbody\n"
    assert sendmail(config, "-i", "a@remote.test", stdin=forged).returncode == 0
    config = local_config(ours, tmp_path, "[senders.sendmail]\nany_sender = true\n")
    forged = forged.replace(b"other.org", b"anywhere.test")
    assert sendmail(config, "-i", "a@remote.test", stdin=forged).returncode == 0
    assert len(stored_messages(ours)) == 2


def postroom_send(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postroom", "--config", str(config), "send", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_postroom_send_refuses_a_foreign_from_in_one_line_and_signs_its_own(
    ours: ServerThread, tmp_path: Path
) -> None:
    config = local_config(ours, tmp_path)
    refused = postroom_send(config, "--to", "a@remote.test", "--from", "ceo@other.org")
    assert refused.returncode != 0
    assert refused.stderr.count("\n") == 1 and "5.7.1" in refused.stderr
    assert stored_messages(ours) == []
    sent = postroom_send(config, "--to", "a@remote.test", "--from", "news@example.com")
    assert sent.returncode == 0, sent.stderr
    [message] = stored_messages(ours)
    assert signed_domains(message) == ["example.com"]


# -- relay_networks -----------------------------------------------------------------------
@pytest.fixture
def lan(make_server: Make) -> ServerThread:
    """127.0.0.2 is a trusted network (a printer on the LAN); 127.0.0.3 is not."""
    server = make_server(relay_networks=["127.0.0.2/32"])
    server.add_domain("example.com")
    KeyRing(server.data_dir).generate("example.com", "s1", "ed25519")
    return server


def from_address(server: ServerThread, role: str, source: str) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", server.ports[role], source_address=(source, 0), timeout=10)
    client.ehlo("printer.lan")
    return client


def test_a_relay_network_relays_without_auth_as_the_local_domains(
    lan: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="postroom.mail")
    scan = b"From: scanner@example.com\r\nTo: someone@remote.test\r\nSubject: scan\r\n\r\nPDF\r\n"
    client = from_address(lan, "mx", "127.0.0.2")
    try:
        client.starttls(context=client_context(lan.data_dir))  # still the network after it
        client.ehlo("printer.lan")
        code, text = transaction(client, "scanner@example.com", scan)
        assert code == 250, text
        forged = scan.replace(b"scanner@example.com", b"ceo@other.org")
        client.rset()
        assert client.mail("ceo@other.org")[0] == 553
        code, text = transaction(client, "scanner@example.com", forged)
        assert (code, text[:5]) == (553, b"5.7.1")
    finally:
        client.quit()
    [message] = stored_messages(lan)
    assert signed_domains(message) == ["example.com"]
    stored = lan.call(lan.store.messages(limit=10))
    assert [(m.principal, m.client_ip) for m in stored] == [("127.0.0.2/32", "127.0.0.2")]
    lines = [r.getMessage() for r in caplog.records if "smtp.transaction" in r.getMessage()]
    assert any(
        '"relay_network":"127.0.0.2/32"' in line and '"auth_user":null' in line for line in lines
    )


def test_a_client_outside_the_relay_networks_may_not_relay(lan: ServerThread) -> None:
    client = from_address(lan, "mx", "127.0.0.3")
    try:
        assert client.mail("scanner@example.com")[0] == 250
        code, text = client.rcpt("someone@remote.test")
        assert (code, text[:5]) == (550, b"5.7.1")
    finally:
        client.quit()


def test_relay_networks_do_not_open_the_submission_port(lan: ServerThread) -> None:
    client = from_address(lan, "submission", "127.0.0.2")
    try:
        client.starttls(context=client_context(lan.data_dir))
        client.ehlo("printer.lan")
        code, text = client.mail("scanner@example.com")
        assert (code, text[:5]) == (530, b"5.7.0")
    finally:
        client.quit()
