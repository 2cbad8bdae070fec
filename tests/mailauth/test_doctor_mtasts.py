"""MTA-STS in ``domain check``: the TXT record over loopback DNS, the policy file over real
HTTPS from a loopback server whose certificate names mta-sts.<domain> (trustme CA), found
through the same DNS server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trustme

from postroom.mailauth.doctor_mtasts import PolicyFetcher, check_mta_sts, parse_policy
from postroom.mailauth.doctor_report import Finding, Record, Status
from postroom.resolver import DnsResolver
from tests.support.dns_server import DnsServer
from tests.support.https_server import HttpsServer

DOMAIN = "sts.test"
HOST = f"mta-sts.{DOMAIN}"
PATH = "/.well-known/mta-sts.txt"
MX = ["mx1.sts.test", "mx2.sts.test"]
NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
GOOD = b"version: STSv1\r\nmode: enforce\r\nmx: *.sts.test\r\nmax_age: 604800\r\n"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def web(ca: trustme.CA) -> Iterator[HttpsServer]:
    with HttpsServer(ca, HOST, {PATH: GOOD}) as server:
        yield server


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    zone = {
        f"_mta-sts.{DOMAIN}": {"TXT": ['"v=STSv1; id=20270101"']},
        HOST: {"A": ["127.0.0.1"]},
    }
    with DnsServer(zone) as server:
        yield server


async def check(dns: DnsServer, web: HttpsServer, ca_trusted: bool = True) -> Finding:
    resolver = DnsResolver(dns.settings(timeout=1.0))
    tls = web.client_context() if ca_trusted else None
    fetcher = PolicyFetcher(resolver, port=web.port, tls=tls, timeout=2.0)
    return await check_mta_sts(DOMAIN, MX, resolver, fetcher, NOW, hostname="mx1.sts.test")


async def test_a_good_policy_is_ok(dns: DnsServer, web: HttpsServer) -> None:
    finding = await check(dns, web)
    assert finding.status is Status.OK
    assert "enforce" in finding.explanation
    assert web.requests == [(PATH, HOST)]  # asked by name, over TLS for that name


async def test_txt_without_a_policy_file(dns: DnsServer, web: HttpsServer) -> None:
    web.files.clear()
    finding = await check(dns, web)
    assert finding.status is Status.WRONG
    assert "HTTP 404" in finding.explanation
    assert finding.fix == Record(
        f"https://{HOST}{PATH}",
        "file",
        "version: STSv1\nmode: enforce\nmx: mx1.sts.test\nmx: mx2.sts.test\nmax_age: 604800\n",
    )
    assert not finding.passes


async def test_txt_without_a_policy_host(dns: DnsServer, web: HttpsServer) -> None:
    dns.zone.pop(HOST)
    finding = await check(dns, web)
    assert finding.status is Status.WRONG
    assert "cannot be fetched" in finding.explanation


async def test_an_untrusted_certificate_is_a_failed_fetch(dns: DnsServer, web: HttpsServer) -> None:
    finding = await check(dns, web, ca_trusted=False)
    assert finding.status is Status.WRONG
    assert "CERTIFICATE_VERIFY_FAILED" in finding.explanation
    assert web.requests == []


async def test_policy_not_covering_the_mx_hosts(dns: DnsServer, web: HttpsServer) -> None:
    web.files[PATH] = GOOD.replace(b"*.sts.test", b"mx1.sts.test")
    finding = await check(dns, web)
    assert finding.status is Status.WRONG
    assert "do not cover mx2.sts.test" in finding.explanation


async def test_testing_mode_is_a_warning_that_passes(dns: DnsServer, web: HttpsServer) -> None:
    web.files[PATH] = GOOD.replace(b"enforce", b"testing")
    finding = await check(dns, web)
    assert finding.status is Status.WARNING
    assert finding.passes  # optional: only a broken one fails


async def test_malformed_txt(dns: DnsServer, web: HttpsServer) -> None:
    dns.set(f"_mta-sts.{DOMAIN}", "TXT", '"v=STSv1; id=not-alnum!"')
    finding = await check(dns, web)
    assert finding.status is Status.WRONG
    assert finding.fix == Record(f"_mta-sts.{DOMAIN}", "TXT", "v=STSv1; id=20270115080000")


@pytest.mark.parametrize(
    "record",
    ["v=STSv1; id=20270101;", "v=STSv1;id=abc", "v=STSv1; id=1; ext=value"],
)
async def test_well_formed_txt_variants(dns: DnsServer, web: HttpsServer, record: str) -> None:
    dns.set(f"_mta-sts.{DOMAIN}", "TXT", f'"{record}"')
    assert (await check(dns, web)).status is Status.OK


async def test_absent_is_ok_and_optional(dns: DnsServer, web: HttpsServer) -> None:
    dns.set(f"_mta-sts.{DOMAIN}", "TXT")
    finding = await check(dns, web)
    assert finding.status is Status.OK
    assert not finding.required
    assert web.requests == []


def test_parse_policy_errors() -> None:
    fields, errors = parse_policy("version: STSv1\nmode: enforce\nmx: a.test\nmx: b.test\n")
    assert fields["mx"] == ["a.test", "b.test"]
    assert errors == ["'max_age' must be a number of seconds up to 31557600"]
    _, errors = parse_policy("version: STSv2\nmode: strict\nmax_age: 10\n")
    assert errors == [
        "'version: STSv1' is missing",
        "'mode' must be enforce, testing or none",
        "no 'mx' lines",
    ]
