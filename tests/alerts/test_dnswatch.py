"""The DNS check behind the ``dns`` alert, against a loopback DNS server: a domain that
turns bad alerts once, stays quiet while bad, and alerts again after it was fixed and
broke anew."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from postroom.alerts.dnswatch import DnsWatch
from postroom.alerts.service import Alerts
from postroom.config.feedback import AlertFormat, AlertKind, AlertSettings
from postroom.config.settings import DnsSettings
from postroom.mailauth.dkim import KeyRing
from postroom.mailauth.doctor import DomainCheck, PolicyFetcher
from postroom.resolver import DnsResolver
from tests.conftest import FakeClock
from tests.support.dns_server import DnsServer
from tests.support.http_fake import FakeHttp, Reply, Request, serve


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


@pytest.fixture
def hook() -> Iterator[FakeHttp]:
    def answer(request: Request) -> Reply:
        return Reply(204)

    with serve(answer) as fake:
        yield fake


def publish_good(dns: DnsServer, keys: KeyRing) -> None:
    for key in keys.keys("example.test"):
        dns.set(key.record_name, "TXT", " ".join(_strings(key.record())))
    dns.set("example.test", "MX", "10 mail.example.test.")
    dns.set("mail.example.test", "A", "127.0.0.1")
    dns.set("example.test", "TXT", '"v=spf1 ip4:127.0.0.1 -all"')
    dns.set("_dmarc.example.test", "TXT", '"v=DMARC1; p=reject"')
    dns.set("1.0.0.127.in-addr.arpa", "PTR", "mail.example.test.")


async def test_a_domain_turning_bad_alerts_once(
    dns: DnsServer, hook: FakeHttp, tmp_path: Path
) -> None:
    keys = KeyRing(tmp_path)
    keys.generate("example.test", "s1", "ed25519")
    resolver = DnsResolver(DnsSettings(nameservers=(dns.address,), timeout=1))
    alerts = Alerts(
        [
            AlertSettings(
                name="ops",
                format=AlertFormat.WEBHOOK,
                url=f"{hook.url}/a",
                on=(AlertKind.DNS,),
                quiet=0,
            )
        ],
        clock=FakeClock(),
        hostname="mail.example.test",
        send_email=_no_email,
    )

    def check() -> DomainCheck:
        return DomainCheck(
            resolver=resolver,
            keys=keys,
            hostname="mail.example.test",
            addresses=("127.0.0.1",),
            fetcher=PolicyFetcher(resolver, timeout=1),
            now=0.0,
        )

    async def domains() -> list[str]:
        return ["example.test"]

    watch = DnsWatch(alerts, domains=domains, check=check)
    async with httpx.AsyncClient() as http:

        async def settled() -> None:
            await watch.check_all()
            await alerts.flush(http)

        publish_good(dns, keys)
        await settled()
        assert [r.json()["text"] for r in hook.requests] == []
        dns.set("example.test", "TXT", '"v=spf1 -all"')  # this server no longer allowed
        await settled()
        await settled()  # still bad: said already
        publish_good(dns, keys)
        await settled()
        dns.set("_dmarc.example.test", "TXT")  # DMARC removed
        await settled()

    first, second = (r.json() for r in hook.requests)
    assert (first["kind"], first["subject"]) == ("dns", "example.test")
    assert "spf" in first["text"]
    assert "dmarc" in second["text"]


async def _no_email(sender: str, to: object, data: bytes) -> None:
    raise AssertionError("no email destination here")


def _strings(value: str) -> list[str]:
    """A TXT value as quoted strings of at most 255 characters."""
    return ['"' + value[i : i + 255] + '"' for i in range(0, len(value), 255)]
