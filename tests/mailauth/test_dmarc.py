"""DMARC (RFC 7489): records, alignment and the policy that applies, with the records
served by the loopback DNS server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypedDict, Unpack

import pytest

from postroom.mailauth.dmarc import (
    DmarcRecord,
    aligned,
    check_dmarc,
    organizational_domain,
    parse_record,
)
from postroom.resolver import DnsResolver
from tests.support.dns_server import DnsServer


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        server.add("_dmarc.example.test", "TXT", '"v=DMARC1; p=reject; sp=quarantine"')
        server.add("_dmarc.strict.test", "TXT", '"v=DMARC1; p=reject; adkim=s; aspf=s"')
        server.add("_dmarc.own.example.test", "TXT", '"v=DMARC1; p=none"')
        server.add("_dmarc.two.test", "TXT", '"v=DMARC1; p=reject"', '"v=DMARC1; p=none"')
        server.add("_dmarc.broken.test", "TXT", '"v=DMARC1; p=maybe"')
        server.add("_dmarc.co.uk", "TXT", '"v=DMARC1; p=reject"')  # a public suffix's
        server.add("_dmarc.partial.test", "TXT", '"v=DMARC1; p=reject; pct=50"')
        yield server


@pytest.mark.parametrize(
    ("domain", "org"),
    [
        ("example.test", "example.test"),
        ("a.b.example.test", "example.test"),
        ("mail.example.co.uk", "example.co.uk"),
        ("EXAMPLE.COM.", "example.com"),
    ],
)
def test_organizational_domain(domain: str, org: str) -> None:
    assert organizational_domain(domain) == org


@pytest.mark.parametrize(
    ("identifier", "header_from", "mode", "expected"),
    [
        ("example.test", "example.test", "s", True),
        ("mail.example.test", "example.test", "s", False),
        ("mail.example.test", "example.test", "r", True),
        ("example.test", "news.example.test", "r", True),
        ("a.example.co.uk", "b.example.co.uk", "r", True),
        ("example.co.uk", "other.co.uk", "r", False),  # the public suffix is no org
        ("evil.test", "example.test", "r", False),
    ],
)
def test_alignment(identifier: str, header_from: str, mode: str, expected: bool) -> None:
    assert aligned(identifier, header_from, mode) is expected


def test_parse_record() -> None:
    assert parse_record("v=DMARC1; p=quarantine; pct=50; rua=mailto:x@y.test") == DmarcRecord(
        p="quarantine", sp="quarantine", pct=50
    )
    assert parse_record("v=DMARC1;p=reject;sp=none;adkim=s") == DmarcRecord(
        p="reject", sp="none", adkim="s"
    )
    assert parse_record("v=spf1 -all") is None
    assert parse_record("v=DMARC1; p=sometimes") is None
    assert parse_record("p=reject; v=DMARC1") is None  # v= must come first


class Evidence(TypedDict, total=False):
    """What the SPF and DKIM checks found, as check_dmarc takes it."""

    spf_result: str
    spf_domain: str
    dkim_passes: list[str]


async def dmarc(server: DnsServer, header_from: str, **found: Unpack[Evidence]) -> tuple[str, str]:
    result = await check_dmarc(
        DnsResolver(server.settings(0.5)),
        header_from,
        spf_result=found.get("spf_result", "none"),
        spf_domain=found.get("spf_domain", ""),
        dkim_passes=found.get("dkim_passes", []),
    )
    return result.result, result.policy


@pytest.mark.parametrize(
    ("header_from", "kwargs", "expected"),
    [
        # DKIM aligned (relaxed: a subdomain's signature counts), or SPF aligned
        ("example.test", {"dkim_passes": ["example.test"]}, ("pass", "reject")),
        ("example.test", {"dkim_passes": ["mail.example.test"]}, ("pass", "reject")),
        (
            "example.test",
            {"spf_result": "pass", "spf_domain": "bounce.example.test"},
            ("pass", "reject"),
        ),
        (
            "example.test",
            {"spf_result": "softfail", "spf_domain": "example.test"},
            ("fail", "reject"),
        ),
        ("example.test", {"dkim_passes": ["evil.test"]}, ("fail", "reject")),
        # strict: only the exact domain
        ("strict.test", {"dkim_passes": ["mail.strict.test"]}, ("fail", "reject")),
        ("strict.test", {"spf_result": "pass", "spf_domain": "strict.test"}, ("pass", "reject")),
        # a subdomain without its own record: the org domain's sp=
        ("news.example.test", {}, ("fail", "quarantine")),
        # a subdomain with its own record: its p=
        ("own.example.test", {}, ("fail", "none")),
        # no record, several records, a broken record: none
        ("nothing.test", {}, ("none", "none")),
        ("two.test", {}, ("none", "none")),
        ("broken.test", {}, ("none", "none")),
        # pct below 100: the next lower policy (6.6.4), so no refusal
        ("partial.test", {}, ("fail", "quarantine")),
        # never the public suffix's record
        ("example.co.uk", {}, ("none", "none")),
    ],
)
async def test_policy_and_alignment(
    dns_server: DnsServer, header_from: str, kwargs: Evidence, expected: tuple[str, str]
) -> None:
    assert await dmarc(dns_server, header_from, **kwargs) == expected


async def test_servfail_is_temperror(dns_server: DnsServer) -> None:
    dns_server.servfail.add("_dmarc.example.test")
    assert await dmarc(dns_server, "example.test") == ("temperror", "none")
