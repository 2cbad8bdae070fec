"""DnsResolver against a real DNS server on loopback (tests/support/dns_server.py)."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import dns.asyncquery
import dns.flags
import dns.message
import pytest

from postroom.config.settings import DnsSettings
from postroom.errors import ConfigError
from postroom.resolver import (
    DnsResolver,
    MxHost,
    MxResult,
    NoSuchDomain,
    TemporaryLookupFailure,
    parse_nameserver,
)
from tests.support.dns_server import DnsServer, bind_udp_and_tcp

ZONE = {
    "example.test": {"MX": ["20 mx3.example.test", "10 mx1.example.test", "10 mx2.example.test"]},
    "mx1.example.test": {"A": ["127.0.0.2", "127.0.0.3"], "AAAA": ["::1"]},
    "mx2.example.test": {"AAAA": ["::1"]},
    "nomx.test": {"A": ["127.0.0.4"], "TXT": ['"v=spf1 -all"']},
    "null.test": {"MX": ["0 ."]},
    "halfnull.test": {"MX": ["0 .", "10 mx1.example.test"]},
    "bare.test": {"TXT": ['"nothing here"']},
}


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer(ZONE) as server:
        yield server


def resolver(server: DnsServer, seed: int = 1, timeout: float = 1.0) -> DnsResolver:
    return DnsResolver(server.settings(timeout=timeout), rng=random.Random(seed))


async def test_mx_hosts_come_in_preference_order(dns_server: DnsServer) -> None:
    result = await resolver(dns_server).mx("example.test")
    assert [h.preference for h in result.hosts] == [10, 10, 20]
    assert result.hosts[2] == MxHost(20, "mx3.example.test")
    assert not result.null and not result.implicit


async def test_equal_preferences_are_shuffled_by_the_given_rng(dns_server: DnsServer) -> None:
    orders = set()
    for seed in range(20):
        result = await resolver(dns_server, seed).mx("example.test")
        orders.add(tuple(h.host for h in result.hosts[:2]))
        assert result.hosts[2].host == "mx3.example.test"  # never mixed across preferences
    assert orders == {
        ("mx1.example.test", "mx2.example.test"),
        ("mx2.example.test", "mx1.example.test"),
    }
    again = [await resolver(dns_server, 7).mx("example.test") for _ in range(2)]
    assert again[0] == again[1]  # one seed, one order


async def test_no_mx_records_is_the_implicit_mx(dns_server: DnsServer) -> None:
    result = await resolver(dns_server).mx("nomx.test")
    assert result == MxResult("nomx.test", (MxHost(0, "nomx.test"),), implicit=True)


async def test_null_mx_is_flagged(dns_server: DnsServer) -> None:
    result = await resolver(dns_server).mx("null.test")
    assert result.null and result.hosts == ()


async def test_a_dot_among_other_mx_records_is_not_a_null_mx(dns_server: DnsServer) -> None:
    result = await resolver(dns_server).mx("halfnull.test")
    assert not result.null
    assert result.hosts == (MxHost(10, "mx1.example.test"),)


async def test_nxdomain_is_permanent(dns_server: DnsServer) -> None:
    with pytest.raises(NoSuchDomain) as caught:
        await resolver(dns_server).mx("missing.test")
    assert caught.value.temporary is False


async def test_nxdomain_forced_for_a_name_in_the_zone(dns_server: DnsServer) -> None:
    dns_server.nxdomain.add("example.test")
    with pytest.raises(NoSuchDomain):
        await resolver(dns_server).mx("example.test")


async def test_servfail_is_temporary(dns_server: DnsServer) -> None:
    dns_server.servfail.add("example.test")
    with pytest.raises(TemporaryLookupFailure) as caught:
        await resolver(dns_server).mx("example.test")
    assert caught.value.temporary is True
    assert "SERVFAIL" in str(caught.value)


async def test_no_answer_is_a_temporary_timeout(dns_server: DnsServer) -> None:
    dns_server.drop.add("example.test")
    with pytest.raises(TemporaryLookupFailure, match="timed out"):
        await resolver(dns_server, timeout=0.2).mx("example.test")


async def test_addresses_ipv4_first_then_ipv6(dns_server: DnsServer) -> None:
    r = resolver(dns_server)
    found = await r.addresses("mx1.example.test", ipv6=True)
    assert set(found[:2]) == {"127.0.0.2", "127.0.0.3"} and found[2:] == ["::1"]
    assert set(await r.addresses("mx1.example.test", ipv6=False)) == {"127.0.0.2", "127.0.0.3"}
    assert await r.addresses("mx2.example.test", ipv6=False) == []
    assert await r.addresses("bare.test", ipv6=True) == []
    assert dns_server.queries[-2:] == [("bare.test", "A"), ("bare.test", "AAAA")]


async def test_address_literals_need_no_lookup(dns_server: DnsServer) -> None:
    r = resolver(dns_server)
    assert await r.addresses("127.0.0.9", ipv6=True) == ["127.0.0.9"]
    assert await r.addresses("[::1]", ipv6=True) == ["::1"]
    assert dns_server.queries == []


async def test_one_family_failing_still_gives_the_other(dns_server: DnsServer) -> None:
    dns_server.drop.add("mx1.example.test")
    r = resolver(dns_server, timeout=0.2)
    with pytest.raises(TemporaryLookupFailure):
        await r.addresses("mx1.example.test", ipv6=True)
    with pytest.raises(NoSuchDomain):
        await r.addresses("nohost.example.test", ipv6=True)


async def test_the_test_server_answers_over_tcp_too(dns_server: DnsServer) -> None:
    query = dns.message.make_query("nomx.test", "TXT")
    response = await dns.asyncquery.tcp(query, "127.0.0.1", port=dns_server.port, timeout=2)
    assert response.answer[0][0].to_text() == '"v=spf1 -all"'
    assert dns_server.errors == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("[2001:db8::1]", ("2001:db8::1", 53)),
    ],
)
def test_nameserver_syntax(text: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize("text", ["dns.example", "127.0.0.1:0", "127.0.0.1:x", "[::1]5353"])
def test_bad_nameservers_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match=r"dns\.nameservers"):
        DnsResolver(DnsSettings(nameservers=(text,)))


@pytest.fixture
def truncating_port() -> Iterator[int]:
    """A loopback port whose UDP side answers every query truncated (TC), so the client
    asks again over TCP, and whose TCP side is bound but not listening: refused."""
    udp, tcp = bind_udp_and_tcp("127.0.0.1")  # tcp never listens: connections are refused
    port = udp.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        udp.settimeout(0.1)
        while not stop.is_set():
            try:
                wire, peer = udp.recvfrom(65535)
            except TimeoutError:
                continue
            response = dns.message.make_response(dns.message.from_wire(wire))
            response.flags |= dns.flags.TC
            udp.sendto(response.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join(5)
    udp.close()
    tcp.close()


async def test_a_refused_connection_to_the_nameserver_is_named_not_servfail(
    truncating_port: int,
) -> None:
    settings = DnsSettings(nameservers=(f"127.0.0.1:{truncating_port}",), timeout=2.0)
    with pytest.raises(TemporaryLookupFailure) as caught:
        await DnsResolver(settings).mx("example.test")
    assert "connection refused" in str(caught.value)
    assert "SERVFAIL" not in str(caught.value)


async def test_a_nameserver_that_never_answers_is_a_timeout(dns_server: DnsServer) -> None:
    dns_server.drop.add("example.test")
    with pytest.raises(TemporaryLookupFailure, match="timed out"):
        await DnsResolver(dns_server.settings(timeout=0.3)).mx("example.test")
