"""DnsResolver's TXT and PTR lookups against a real DNS server on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from postroom.resolver import DnsResolver, TemporaryLookupFailure
from tests.support.dns_server import DnsServer

ZONE = {
    "example.test": {"TXT": ['"v=spf1 " "ip4:192.0.2.1 -all"', '"other"'], "A": ["192.0.2.1"]},
    "1.2.0.192.in-addr.arpa": {"PTR": ["Mail.Example.test."]},
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa": {
        "PTR": ["six.example.test."]
    },
}


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer(ZONE) as server:
        yield server


def resolver(server: DnsServer) -> DnsResolver:
    return DnsResolver(server.settings(timeout=0.5))


async def test_txt_joins_the_strings_of_each_record(dns_server: DnsServer) -> None:
    records = await resolver(dns_server).txt("example.test")
    assert sorted(records) == [b"other", b"v=spf1 ip4:192.0.2.1 -all"]


async def test_txt_of_a_name_without_txt_is_empty(dns_server: DnsServer) -> None:
    dns_server.set("example.test", "TXT")
    assert await resolver(dns_server).txt("example.test") == []


async def test_txt_of_a_missing_name_is_empty(dns_server: DnsServer) -> None:
    assert await resolver(dns_server).txt("_dmarc.nowhere.test") == []


async def test_txt_servfail_is_temporary(dns_server: DnsServer) -> None:
    dns_server.servfail.add("example.test")
    with pytest.raises(TemporaryLookupFailure):
        await resolver(dns_server).txt("example.test")


async def test_ptr_gives_lower_case_names_without_the_dot(dns_server: DnsServer) -> None:
    assert await resolver(dns_server).ptr("192.0.2.1") == ["mail.example.test"]
    assert await resolver(dns_server).ptr("2001:db8::1") == ["six.example.test"]


async def test_ptr_of_an_address_without_reverse_name_is_empty(dns_server: DnsServer) -> None:
    assert await resolver(dns_server).ptr("192.0.2.99") == []
