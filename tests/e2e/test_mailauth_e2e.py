"""End to end: mail authentication in a running server, DNS from the loopback server.

Inbound: an SMTP session to the mx listener, then the stored message's
Authentication-Results; forged copies removed; the opt-in 550 and 451 refusals.
Outbound: mail from our user is signed once at commit, crosses a real SMTP hop to a
loopback peer and verifies there (dkimpy's verifier, RSA and Ed25519); a retry sends the
identical signature; postroom's own DSNs are signed too. A second verifier written
from RFC 6376 alone (tests/mailauth/independent_dkim.py) checks the same bytes.
"""

from __future__ import annotations

import json
import logging
import smtplib
from collections.abc import Iterator
from pathlib import Path

import dkim
import dns.resolver
import pytest

from postroom.mailauth.dkim import DkimSigner, KeyRing, record_strings
from tests.conftest import FakeClock
from tests.mailauth.independent_dkim import verify_all
from tests.support.dns_server import DnsServer
from tests.support.servers import client_context, smtp_client
from tests.support.smtp_peers import Peers
from tests.support.thread import MakeServer, ServerThread

INBOUND = (
    b"From: Shop <news@sender.test>\r\n"
    b"To: user@example.test\r\n"
    b"Subject: Offers\r\n"
    b"Message-ID: <1@sender.test>\r\n"
    b"\r\n"
    b"Hello.\r\n"
)
OUTBOUND = (
    b"From: App <app@example.test>\r\n"
    b"To: friend@remote.test\r\n"
    b"Subject: Receipt\r\n"
    b"Message-ID: <2@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"Thanks for your order.\r\n"
)
PAST = 1_700_000_000.0  # verifiers refuse a t= in the future (RFC 6376 3.5)
FORGED = b"Authentication-Results: mail.test; spf=pass smtp.mailfrom=bank.test; dkim=pass\r\n"
OTHER = b"Authentication-Results: relay.other.test; spf=none\r\n"


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        server.add("sender.test", "TXT", '"v=spf1 ip4:127.0.0.1 -all"')
        server.add("_dmarc.sender.test", "TXT", '"v=DMARC1; p=reject"')
        server.add("evil.test", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')
        server.add("_dmarc.evil.test", "TXT", '"v=DMARC1; p=reject"')
        yield server


@pytest.fixture
def peers() -> Iterator[Peers]:
    with Peers() as started:
        yield started


def publish_keys(server: DnsServer, keys: KeyRing, domain: str) -> None:
    server.set(f"_dmarc.{domain}", "TXT", '"v=DMARC1; p=reject"')
    for key in (keys.generate(domain, "r1", "rsa", 1024), keys.generate(domain, "e1", "ed25519")):
        server.set(key.record_name, "TXT", record_strings(key.record()))


def verifies(server: DnsServer, message: bytes, index: int) -> bool:
    """dkimpy's verifier on its own, reading the key records with dnspython."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.host]
    resolver.port = server.port

    def txt(name: bytes, timeout: float = 5) -> bytes | None:
        answer = resolver.resolve(name.decode(), "TXT")
        return b"".join(next(iter(answer)).strings)

    try:
        return bool(dkim.DKIM(message).verify(idx=index, dnsfunc=txt))
    except dkim.DKIMException:
        return False


def inbound_server(make_server: MakeServer, dns_server: DnsServer, **auth: bool) -> ServerThread:
    srv: ServerThread = make_server(
        dns={"nameservers": [dns_server.address], "timeout": 1}, inbound_auth=auth
    )
    srv.add_domain("example.test")
    srv.add_user("user@example.test", "s3cret-pass")
    return srv


def send_to_mx(srv: ServerThread, sender: str, data: bytes) -> None:
    with smtp_client(srv.ports["mx"]) as client:
        client.ehlo("out.sender.test")
        client.sendmail(sender, ["user@example.test"], data)


def stored(srv: ServerThread) -> list[bytes]:
    messages = srv.call(srv.store.messages(limit=10))
    return [srv.call(srv.store.read_body(m.id)) or b"" for m in messages]


def test_inbound_results_in_the_stored_message(
    make_server: MakeServer, dns_server: DnsServer, tmp_path: Path
) -> None:
    keys = KeyRing(tmp_path / "sender-keys")
    publish_keys(dns_server, keys, "sender.test")
    signed = (
        b"".join(s.header for s in DkimSigner(keys).sign(INBOUND, PAST, domain="sender.test"))
        + INBOUND
    )
    srv = inbound_server(make_server, dns_server)
    send_to_mx(srv, "bounce@sender.test", FORGED + OTHER + signed)
    (body,) = stored(srv)
    head = body.split(b"\r\n\r\n", 1)[0].decode()
    assert FORGED.decode() not in head
    assert OTHER.decode() in head  # another authserv-id's header is not ours to judge
    (ours,) = [
        line for line in head.replace("\r\n ", " ").split("\r\n")
        if line.startswith("Authentication-Results: mail.test;")
    ]  # fmt: skip
    assert "spf=pass smtp.mailfrom=sender.test" in ours
    assert "dkim=pass header.d=sender.test header.a=rsa-sha256 header.s=r1" in ours
    assert "dkim=pass header.d=sender.test header.a=ed25519-sha256 header.s=e1" in ours
    assert "dmarc=pass header.from=sender.test" in ours
    assert body.endswith(signed)  # the message itself is untouched


def test_mail_from_a_submission_user_gets_no_inbound_header(
    make_server: MakeServer, dns_server: DnsServer
) -> None:
    srv = inbound_server(make_server, dns_server)
    with smtp_client(srv.ports["submission"]) as client:
        client.starttls(context=client_context(srv.data_dir))
        client.login("user@example.test", "s3cret-pass")
        client.sendmail("user@example.test", ["user@example.test"], OUTBOUND)
    (body,) = stored(srv)
    assert b"Authentication-Results" not in body


def test_dmarc_reject_refuses_at_end_of_data(
    make_server: MakeServer, dns_server: DnsServer
) -> None:
    forged = INBOUND.replace(b"news@sender.test", b"ceo@evil.test")
    lenient = inbound_server(make_server, dns_server)
    send_to_mx(lenient, "ceo@evil.test", forged)
    (body,) = stored(lenient)
    assert b"dmarc=fail" in body
    strict = inbound_server(make_server, dns_server, dmarc_reject=True)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send_to_mx(strict, "ceo@evil.test", forged)
    assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (550, b"5.7.1")
    assert stored(strict) == []


def test_temperror_defers_when_configured(make_server: MakeServer, dns_server: DnsServer) -> None:
    dns_server.servfail.update({"sender.test", "_dmarc.sender.test"})
    srv = inbound_server(make_server, dns_server, temperror_defer=True)
    with pytest.raises(smtplib.SMTPDataError) as deferred:
        send_to_mx(srv, "bounce@sender.test", INBOUND)
    assert (deferred.value.smtp_code, deferred.value.smtp_error[:4]) == (451, b"4.7.")
    assert stored(srv) == []


def relay_server(
    make_server: MakeServer, dns_server: DnsServer, port: int, clock: FakeClock
) -> ServerThread:
    srv: ServerThread = make_server(
        clock=clock,
        dns={"nameservers": [dns_server.address], "timeout": 1},
        mailers=[
            {"name": "relay", "type": "smtp", "host": "127.0.0.1", "port": port, "tls": "none"}
        ],
        routes=[{"name": "out", "mailers": ["relay"]}],
    )
    srv.add_domain("example.test")
    srv.add_user("app@example.test", "s3cret-pass")
    return srv


def submit(srv: ServerThread, data: bytes = OUTBOUND, rcpt: str = "friend@remote.test") -> None:
    with smtp_client(srv.ports["submission"]) as client:
        client.starttls(context=client_context(srv.data_dir))
        client.login("app@example.test", "s3cret-pass")
        client.sendmail("app@example.test", [rcpt], data)


def test_signed_once_and_verified_after_a_real_smtp_hop(
    make_server: MakeServer, dns_server: DnsServer, peers: Peers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="postroom.mail")
    peer = peers.start("127.0.0.1", greylist=True)  # the first attempt is deferred
    clock = FakeClock(PAST)
    srv = relay_server(make_server, dns_server, peer.port, clock)
    publish_keys(dns_server, KeyRing(srv.data_dir), "example.test")
    submit(srv)
    (body,) = stored(srv)
    assert body.count(b"DKIM-Signature:") == 2  # signed at commit, RSA and Ed25519
    assert f"t={int(clock.now)};".encode() in body.replace(b"\r\n ", b" ")
    srv.run_delivery()
    assert peer.received == []
    clock.advance(3600)
    srv.run_delivery()
    (got,) = peer.received
    assert verifies(dns_server, got.data, 0)
    assert verifies(dns_server, got.data, 1)
    keys = KeyRing(srv.data_dir).keys("example.test")
    records = {k.record_name: k.record().encode() for k in keys}
    assert verify_all(got.data, records.__getitem__) == [True, True]  # a second verifier
    # The retry sent the signatures made at commit, byte for byte.
    signatures = body[: body.index(b"From: App")].split(b"DKIM-Signature:")[1:]
    assert all(b"DKIM-Signature:" + s in got.data for s in signatures)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "postroom.mail"]
    attempts = [line for line in lines if line["event"] == "delivery.attempt"]
    assert [a["dkim"] for a in attempts] == [
        "rsa-sha256 s=r1 d=example.test, ed25519-sha256 s=e1 d=example.test"
    ] * 2


def test_unsigned_when_the_domain_has_no_key(
    make_server: MakeServer, dns_server: DnsServer, peers: Peers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="postroom.mail")
    peer = peers.start("127.0.0.1")
    srv = relay_server(make_server, dns_server, peer.port, FakeClock(PAST))
    publish_keys(dns_server, KeyRing(srv.data_dir), "other.test")
    submit(srv)
    srv.run_delivery()
    (got,) = peer.received
    assert b"DKIM-Signature" not in got.data
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "postroom.mail"]
    assert [x["dkim"] for x in lines if x["event"] == "delivery.attempt"] == ["none"]


def test_a_bounce_from_postroom_is_signed(
    make_server: MakeServer, dns_server: DnsServer, peers: Peers
) -> None:
    peer = peers.start("127.0.0.1", reject_rcpt={"friend@remote.test": "550 5.1.1 No such user"})
    srv = relay_server(make_server, dns_server, peer.port, FakeClock(PAST))
    publish_keys(dns_server, KeyRing(srv.data_dir), "mail.test")  # the DSN's From domain
    submit(srv)
    srv.run_delivery()
    dsn = [b for b in stored(srv) if b"Content-Type: multipart/report" in b]
    (report,) = dsn
    assert b"d=mail.test" in report.replace(b"\r\n ", b" ")
    assert verifies(dns_server, report, 0)


def test_disabled_checks_look_nothing_up(make_server: MakeServer, dns_server: DnsServer) -> None:
    srv = inbound_server(make_server, dns_server, enabled=False)
    send_to_mx(srv, "bounce@sender.test", INBOUND)
    (body,) = stored(srv)
    assert b"Authentication-Results" not in body
    assert dns_server.queries == []


def test_mail_from_outside_is_never_signed(make_server: MakeServer, dns_server: DnsServer) -> None:
    srv = inbound_server(make_server, dns_server)
    KeyRing(srv.data_dir).generate("example.test", "r1", "rsa", 1024)
    claiming_ours = INBOUND.replace(b"news@sender.test", b"ceo@example.test")
    send_to_mx(srv, "bounce@sender.test", claiming_ours)
    (body,) = stored(srv)
    assert b"DKIM-Signature" not in body
    assert b"Authentication-Results: mail.test;" in body


def test_a_second_mta_finds_spf_dkim_and_dmarc_aligned(
    make_server: MakeServer, dns_server: DnsServer
) -> None:
    """The issue's end point: mail from postroom crosses SMTP to another MTA that checks
    all three (a second postroom, on its mx listener, as an unauthenticated client's
    mail), and SPF, DKIM and DMARC pass, aligned with the From domain."""
    receiver = inbound_server(make_server, dns_server)
    receiver.add_domain("remote.test")
    receiver.add_user("friend@remote.test", "pw-1234")
    sender = relay_server(make_server, dns_server, receiver.ports["mx"], FakeClock(PAST))
    dns_server.set("example.test", "TXT", '"v=spf1 ip4:127.0.0.1 -all"')
    publish_keys(dns_server, KeyRing(sender.data_dir), "example.test")
    submit(sender)
    assert sender.run_delivery() == 1
    (body,) = stored(receiver)
    head = body.split(b"\r\n\r\n", 1)[0].decode().replace("\r\n ", " ").replace("\r\n\t", " ")
    (results,) = [
        line for line in head.split("\r\n") if line.startswith("Authentication-Results: mail.test;")
    ]
    assert "spf=pass smtp.mailfrom=example.test" in results
    assert "dkim=pass header.d=example.test header.a=rsa-sha256" in results
    assert "dkim=pass header.d=example.test header.a=ed25519-sha256" in results
    assert "dmarc=pass header.from=example.test" in results
