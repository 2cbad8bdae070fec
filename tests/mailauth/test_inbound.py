"""Inbound checks: SPF, every DKIM signature, DMARC, one Authentication-Results; an
unreadable header; the opt-in refusals. DNS from the loopback server. (Forged copies of
our Authentication-Results are intake's clean-up's: tests/intake/test_cleanup.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.config.settings import InboundAuthSettings
from postroom.mailauth.dkim import DkimSigner, KeyRing, record_strings
from postroom.mailauth.inbound import VERIFY_LIMIT, InboundChecker, InboundVerdict
from postroom.resolver import DnsResolver
from tests.support.dns_server import DnsServer

BODY = (
    b"From: Shop <news@sender.test>\r\n"
    b"To: user@mail.test\r\n"
    b"Subject: Offers\r\n"
    b"Date: Sun, 29 Nov 2026 05:00:00 +0000\r\n"
    b"Message-ID: <1@sender.test>\r\n"
    b"\r\n"
    b"Hello.\r\n"
)
NOW = 1_795_000_000.0


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        server.add("sender.test", "TXT", '"v=spf1 ip4:192.0.2.10 -all"')
        server.add("_dmarc.sender.test", "TXT", '"v=DMARC1; p=reject"')
        server.add("out.sender.test", "TXT", '"v=spf1 a -all"')
        server.add("out.sender.test", "A", "192.0.2.10")
        yield server


@pytest.fixture
def signed(tmp_path: Path, dns_server: DnsServer) -> bytes:
    keys = KeyRing(tmp_path)
    for key in (
        keys.generate("sender.test", "r1", "rsa", 1024),
        keys.generate("sender.test", "e1", "ed25519"),
    ):
        dns_server.set(key.record_name, "TXT", record_strings(key.record()))
    return b"".join(s.header for s in DkimSigner(keys).sign(BODY, NOW, domain="sender.test")) + BODY


def checker(server: DnsServer, **settings: bool) -> InboundChecker:
    return InboundChecker(
        InboundAuthSettings(**settings), DnsResolver(server.settings(0.5)), "mail.test"
    )


async def check(
    server: DnsServer, message: bytes, ip: str = "192.0.2.10", **settings: bool
) -> InboundVerdict:
    head = message[: message.index(b"\r\n\r\n") + 4]
    return await checker(server, **settings).check(
        head,
        size=len(message),
        load=lambda: message,
        ip=ip,
        helo="out.sender.test",
        sender="bounce@sender.test",
        now=NOW,
    )


async def test_all_pass(dns_server: DnsServer, signed: bytes) -> None:
    verdict = await check(dns_server, signed)
    assert verdict.refusal is None
    header = verdict.header.decode()
    assert header.startswith("Authentication-Results: mail.test;")
    assert "spf=pass smtp.mailfrom=sender.test" in header
    assert "spf=pass smtp.helo=out.sender.test" in header  # RFC 7208 2.3
    assert "dkim=pass header.d=sender.test header.a=rsa-sha256 header.s=r1" in header
    assert "dkim=pass header.d=sender.test header.a=ed25519-sha256 header.s=e1" in header
    assert "dmarc=pass header.from=sender.test policy.dmarc=reject" in header
    assert header.endswith("\r\n") and "\r\n" not in header[:-2].replace("\r\n ", "")


async def test_tampered_and_unknown_signatures(dns_server: DnsServer, signed: bytes) -> None:
    verdict = await check(dns_server, signed.replace(b"Hello.", b"Hello!"))
    assert [s.result for s in verdict.dkim] == ["fail", "fail"]
    dns_server.zone.pop("r1._domainkey.sender.test")
    verdict = await check(dns_server, signed)
    assert [s.result for s in verdict.dkim] == ["permerror", "pass"]


async def test_dmarc_fail_is_refused_only_when_configured(dns_server: DnsServer) -> None:
    verdict = await check(dns_server, BODY, ip="198.51.100.1")
    assert "spf=fail smtp.mailfrom=sender.test" in verdict.header.decode()
    assert "spf=fail smtp.helo=out.sender.test" in verdict.header.decode()
    assert "dmarc=fail" in verdict.header.decode()
    assert verdict.refusal is None
    verdict = await check(dns_server, BODY, ip="198.51.100.1", dmarc_reject=True)
    assert verdict.refusal is not None
    assert (verdict.refusal.code, verdict.refusal.enhanced) == (550, "5.7.1")


async def test_temperror_defers_only_when_configured(dns_server: DnsServer) -> None:
    dns_server.servfail.add("sender.test")
    verdict = await check(dns_server, BODY)
    assert "spf=temperror" in verdict.header.decode()
    assert verdict.refusal is None
    verdict = await check(dns_server, BODY, temperror_defer=True)
    assert verdict.refusal is not None
    assert verdict.refusal.code == 451
    assert verdict.refusal.enhanced is not None and verdict.refusal.enhanced.startswith("4.7.")


async def test_a_header_dkimpy_cannot_read_is_a_dkim_permerror(dns_server: DnsServer) -> None:
    # Intake's clean-up never lets such a header block through; the checks still answer.
    head = b"From: news@sender.test\r\nno colon on this line\r\n\r\n"
    verdict = await check(dns_server, head + b"Hello.\r\n")
    header = verdict.header.decode()
    assert 'dkim=permerror reason="message header cannot be parsed"' in header
    assert "spf=pass" in header and verdict.refusal is None


async def test_a_message_too_big_to_verify_is_not_loaded(
    dns_server: DnsServer, signed: bytes
) -> None:
    head = signed[: signed.index(b"\r\n\r\n") + 4]

    def load() -> bytes:
        raise AssertionError("the whole message was read")

    verdict = await checker(dns_server).check(
        head,
        size=VERIFY_LIMIT + 1,
        load=load,
        ip="192.0.2.10",
        helo="out.sender.test",
        sender="bounce@sender.test",
        now=NOW,
    )
    assert [s.result for s in verdict.dkim] == ["policy", "policy"]
    assert "spf=pass" in verdict.header.decode()  # SPF and DMARC need no body
    assert "dmarc=pass" in verdict.header.decode()


async def test_an_odd_helo_stays_out_of_the_header(dns_server: DnsServer) -> None:
    head = BODY[: BODY.index(b"\r\n\r\n") + 4]
    verdict = await checker(dns_server).check(
        head,
        size=len(BODY),
        load=lambda: BODY,
        ip="192.0.2.10",
        helo="out.sender.test; dkim=pass",
        sender="bounce@sender.test",
        now=NOW,
    )
    assert verdict.helo_spf is None
    assert "dkim=pass" not in verdict.header.decode()
    assert verdict.header.decode().count("\r\n") == 3  # folded: one clause per line
