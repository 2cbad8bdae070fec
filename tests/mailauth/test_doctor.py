"""``domain check`` logic against a real DNS server on loopback: a correct domain, then one
fault at a time, each with its status and the record that fixes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.mailauth.dkim import KeyRing, record_strings
from postroom.mailauth.doctor import (
    DomainCheck,
    DomainNotFound,
    Finding,
    PolicyFetcher,
    Record,
    Report,
    Status,
    check_domain,
    discover_sending_addresses,
)
from postroom.resolver import DnsResolver, TemporaryLookupFailure
from tests.support.dns_server import DnsServer

DOMAIN = "good.test"
HELO = "mail.good.test"
IP = "192.0.2.10"
REVERSE = "10.2.0.192.in-addr.arpa"
NOW = 1_800_000_000.0


def quoted(text: str) -> str:
    return record_strings(text)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    ring = KeyRing(tmp_path_factory.mktemp("data"))
    ring.generate(DOMAIN, "s1", "rsa", 2048)
    return ring


@pytest.fixture(scope="module")
def our_record(keys: KeyRing) -> str:
    return keys.keys(DOMAIN)[0].record()


@pytest.fixture
def dns(our_record: str) -> Iterator[DnsServer]:
    zone = {
        DOMAIN: {"MX": [f"10 {HELO}."], "TXT": [quoted(f"v=spf1 ip4:{IP} -all")]},
        HELO: {"A": [IP]},
        f"s1._domainkey.{DOMAIN}": {"TXT": [quoted(our_record)]},
        f"_dmarc.{DOMAIN}": {"TXT": [quoted("v=DMARC1; p=reject; rua=mailto:d@good.test")]},
        REVERSE: {"PTR": [f"{HELO}."]},
    }
    with DnsServer(zone) as server:
        yield server


async def run(
    dns: DnsServer,
    keys: KeyRing,
    *,
    addresses: tuple[str, ...] = (IP,),
    selector: str | None = None,
    domain: str = DOMAIN,
) -> Report:
    resolver = DnsResolver(dns.settings(timeout=1.0))
    check = DomainCheck(
        resolver=resolver,
        keys=keys,
        hostname=HELO,
        addresses=addresses,
        fetcher=PolicyFetcher(resolver, port=1, timeout=1.0),
        now=NOW,
    )
    return await check_domain(domain, check, selector)


def only(report: Report, check: str) -> Finding:
    found = [f for f in report.findings if f.check == check]
    assert len(found) == 1, found
    return found[0]


def txt(value: str) -> Record:
    return Record(DOMAIN, "TXT", value)


async def test_a_correct_domain_is_ok_everywhere(dns: DnsServer, keys: KeyRing) -> None:
    report = await run(dns, keys)
    assert [(f.check, f.status) for f in report.findings] == [
        ("mx", Status.OK),
        ("spf", Status.OK),
        ("dkim", Status.OK),
        ("dmarc", Status.OK),
        ("ptr", Status.OK),
        ("mta-sts", Status.OK),
        ("tls-rpt", Status.OK),
    ]
    assert all(f.fix is None for f in report.findings)
    assert report.passes
    assert "2048-bit RSA" in only(report, "dkim").explanation
    assert report.to_json()["ok"] is True


async def test_a_domain_that_does_not_exist(dns: DnsServer, keys: KeyRing) -> None:
    with pytest.raises(DomainNotFound, match=r"nowhere\.test: no such domain \(NXDOMAIN\)"):
        await run(dns, keys, domain="nowhere.test")


# -- MX ------------------------------------------------------------------------------


async def test_no_mx(dns: DnsServer, keys: KeyRing) -> None:
    dns.set(DOMAIN, "MX")
    report = await run(dns, keys)
    mx = only(report, "mx")
    assert mx.status is Status.MISSING
    assert mx.fix == Record(DOMAIN, "MX", f"10 {HELO}.")
    assert not report.passes


async def test_null_mx(dns: DnsServer, keys: KeyRing) -> None:
    dns.set(DOMAIN, "MX", "0 .")
    mx = only(await run(dns, keys), "mx")
    assert mx.status is Status.WRONG
    assert "null MX" in mx.explanation


async def test_mx_host_without_address(dns: DnsServer, keys: KeyRing) -> None:
    dns.set(DOMAIN, "MX", f"10 {HELO}.", "20 gone.good.test.")
    mx = only(await run(dns, keys), "mx")
    assert mx.status is Status.WARNING
    assert "gone.good.test" in mx.explanation


# -- SPF -----------------------------------------------------------------------------


async def test_no_spf(dns: DnsServer, keys: KeyRing) -> None:
    dns.set(DOMAIN, "TXT", '"some-verification=123"')
    spf = only(await run(dns, keys), "spf")
    assert spf.status is Status.MISSING
    assert spf.fix == txt(f"v=spf1 ip4:{IP} -all")


@pytest.mark.parametrize(
    ("record", "status", "words"),
    [
        (f"v=spf1 ip4:{IP} +all", Status.WRONG, "'+all' authorizes every server"),
        (f"v=spf1 ip4:{IP} all", Status.WRONG, "'+all' authorizes every server"),
        (f"v=spf1 ip4:{IP} ?all", Status.WRONG, "'?all'"),
        (f"v=spf1 ip4:{IP}", Status.WRONG, "no 'all'"),
        (f"v=spf1 ip4:{IP} ~all", Status.WARNING, "'~all'"),
    ],
)
async def test_spf_all_qualifier(
    dns: DnsServer, keys: KeyRing, record: str, status: Status, words: str
) -> None:
    dns.set(DOMAIN, "TXT", quoted(record))
    report = await run(dns, keys)
    spf = only(report, "spf")
    assert spf.status is status
    assert words in spf.explanation
    assert spf.fix == txt(f"v=spf1 ip4:{IP} -all")
    assert not report.passes  # spf is required: a warning fails the check too


async def test_spf_not_authorizing_our_address(dns: DnsServer, keys: KeyRing) -> None:
    dns.set(DOMAIN, "TXT", quoted("v=spf1 ip4:198.51.100.0/24 -all"))
    spf = only(await run(dns, keys), "spf")
    assert spf.status is Status.WRONG
    assert "not authorized: SPF gives 192.0.2.10 (fail)" in spf.explanation
    assert spf.fix == txt(f"v=spf1 ip4:{IP} ip4:198.51.100.0/24 -all")


async def test_spf_fix_adds_only_the_addresses_missing(dns: DnsServer, keys: KeyRing) -> None:
    # mx authorizes 192.0.2.10 (mail.good.test's address); the IPv6 address is missing.
    dns.set(DOMAIN, "TXT", quoted("v=spf1 mx -ip4:203.0.113.0/24 -all"))
    spf = only(await run(dns, keys, addresses=(IP, "2001:db8::5")), "spf")
    assert spf.status is Status.WRONG
    assert "not authorized: SPF gives 2001:db8::5 (fail)," in spf.explanation
    assert spf.fix == txt("v=spf1 ip6:2001:db8::5 mx -ip4:203.0.113.0/24 -all")


async def test_spf_mx_and_a_and_include_authorize(dns: DnsServer, keys: KeyRing) -> None:
    dns.set(DOMAIN, "TXT", quoted("v=spf1 include:_spf.good.test -all"))
    dns.set("_spf.good.test", "TXT", quoted("v=spf1 a:mail.good.test/24 -all"))
    dns.set(HELO, "A", "192.0.2.200")  # in the /24
    report = await run(dns, keys)
    assert only(report, "spf").status is Status.OK


async def test_spf_over_ten_lookups_is_flattened(dns: DnsServer, keys: KeyRing) -> None:
    includes = " ".join(f"include:i{n}.good.test" for n in range(1, 12))
    dns.set(DOMAIN, "TXT", quoted(f"v=spf1 ip4:{IP} {includes} -all"))
    for n in range(1, 12):
        dns.set(f"i{n}.good.test", "TXT", quoted(f"v=spf1 ip4:198.51.100.{2 * n} -all"))
    spf = only(await run(dns, keys), "spf")
    assert spf.status is Status.WRONG
    assert "11 DNS lookups" in spf.explanation
    flat = " ".join(f"ip4:198.51.100.{2 * n}" for n in range(1, 12))
    assert spf.fix == txt(f"v=spf1 ip4:{IP} {flat} -all")


async def test_spf_lookups_are_counted_through_nested_includes(
    dns: DnsServer, keys: KeyRing
) -> None:
    dns.set(DOMAIN, "TXT", quoted(f"v=spf1 ip4:{IP} include:n1.good.test -all"))
    for n in range(1, 11):  # n1 -> n2 -> ... -> n10: 10 includes, plus one a below
        dns.set(f"n{n}.good.test", "TXT", quoted(f"v=spf1 include:n{n + 1}.good.test -all"))
    dns.set("n11.good.test", "TXT", quoted("v=spf1 a -all"))
    dns.set("n11.good.test", "A", "198.51.100.7")
    spf = only(await run(dns, keys), "spf")
    assert spf.status is Status.WRONG
    assert "12 DNS lookups" in spf.explanation


async def test_spf_include_loop(dns: DnsServer, keys: KeyRing) -> None:
    dns.set(DOMAIN, "TXT", quoted(f"v=spf1 ip4:{IP} include:loop.good.test -all"))
    dns.set("loop.good.test", "TXT", quoted("v=spf1 include:good.test -all"))
    spf = only(await run(dns, keys), "spf")
    assert spf.status is Status.WRONG
    assert "include:good.test loops back to itself" in spf.explanation


async def test_spf_redirect_is_followed(dns: DnsServer, keys: KeyRing) -> None:
    dns.set(DOMAIN, "TXT", quoted("v=spf1 redirect=_spf.good.test"))
    dns.set("_spf.good.test", "TXT", quoted(f"v=spf1 ip4:{IP} -all"))
    assert only(await run(dns, keys), "spf").status is Status.OK
    dns.set("_spf.good.test", "TXT", quoted("v=spf1 ip4:198.51.100.1 -all"))
    spf = only(await run(dns, keys), "spf")
    assert spf.status is Status.WRONG
    assert spf.fix == txt(f"v=spf1 ip4:{IP} redirect=_spf.good.test")


async def test_spf_ptr_mechanism_is_a_warning(dns: DnsServer, keys: KeyRing) -> None:
    dns.set(DOMAIN, "TXT", quoted(f"v=spf1 ip4:{IP} ptr -all"))
    spf = only(await run(dns, keys), "spf")
    assert spf.status is Status.WARNING
    assert "'ptr' should not be used" in spf.explanation
    assert spf.fix == txt(f"v=spf1 ip4:{IP} -all")


async def test_spf_syntax_error(dns: DnsServer, keys: KeyRing) -> None:
    dns.set(DOMAIN, "TXT", quoted(f"v=spf1 ip4:{IP} ip4:300.1.1.1 foo:bar -all"))
    spf = only(await run(dns, keys), "spf")
    assert spf.status is Status.WRONG
    assert "'ip4:300.1.1.1': '300.1.1.1' is not an IP4 network" in spf.explanation
    assert "'foo:bar' is not an SPF mechanism or modifier" in spf.explanation
    assert spf.fix == txt(f"v=spf1 ip4:{IP} -all")


async def test_two_spf_records_are_merged_in_the_fix(dns: DnsServer, keys: KeyRing) -> None:
    dns.set(
        DOMAIN, "TXT", quoted(f"v=spf1 ip4:{IP} -all"), quoted("v=spf1 ip4:203.0.113.0/24 ~all")
    )
    spf = only(await run(dns, keys), "spf")
    assert spf.status is Status.WRONG
    assert "2 SPF records" in spf.explanation
    assert spf.fix is not None
    assert sorted(spf.fix.value.split()) == sorted(
        ["v=spf1", f"ip4:{IP}", "ip4:203.0.113.0/24", "-all"]
    )


# -- DKIM ----------------------------------------------------------------------------


async def test_dkim_key_not_in_dns(dns: DnsServer, keys: KeyRing, our_record: str) -> None:
    dns.set(f"s1._domainkey.{DOMAIN}", "TXT")
    dkim = only(await run(dns, keys), "dkim")
    assert dkim.status is Status.MISSING
    assert dkim.fix == Record(f"s1._domainkey.{DOMAIN}", "TXT", our_record)


async def test_dkim_published_key_is_not_ours(
    dns: DnsServer, keys: KeyRing, our_record: str, tmp_path: Path
) -> None:
    other = KeyRing(tmp_path).generate(DOMAIN, "s1", "rsa", 1024).record()
    dns.set(f"s1._domainkey.{DOMAIN}", "TXT", quoted(other))
    dkim = only(await run(dns, keys), "dkim")
    assert dkim.status is Status.WRONG
    assert "not this server's rsa key" in dkim.explanation
    assert "1024-bit" in dkim.explanation
    assert dkim.fix == Record(f"s1._domainkey.{DOMAIN}", "TXT", our_record)


async def test_dkim_key_of_1024_bits(dns: DnsServer, tmp_path: Path) -> None:
    short = KeyRing(tmp_path)
    record = short.generate(DOMAIN, "s1", "rsa", 1024).record()
    dns.set(f"s1._domainkey.{DOMAIN}", "TXT", quoted(record))
    dkim = only(await run(dns, short), "dkim")
    assert dkim.status is Status.WARNING
    assert "1024 bits" in dkim.explanation
    assert "postroom dkim rotate good.test --bits 2048" in dkim.explanation
    assert dkim.fix is None  # the record to publish exists once the new key does


async def test_dkim_revoked_key(dns: DnsServer, keys: KeyRing) -> None:
    dns.set(f"s1._domainkey.{DOMAIN}", "TXT", quoted("v=DKIM1; k=rsa; p="))
    assert only(await run(dns, keys), "dkim").status is Status.WRONG


async def test_no_local_dkim_keys_names_keygen(dns: DnsServer, tmp_path: Path) -> None:
    dkim = only(await run(dns, KeyRing(tmp_path)), "dkim")
    assert dkim.status is Status.MISSING
    assert "postroom dkim keygen good.test" in dkim.explanation
    assert dkim.fix is None


async def test_dkim_selector_without_a_local_key(dns: DnsServer, keys: KeyRing) -> None:
    dkim = only(await run(dns, keys, selector="other"), "dkim")
    assert dkim.status is Status.MISSING
    assert "selector 'other'" in dkim.explanation


async def test_ed25519_alone_is_a_warning(dns: DnsServer, tmp_path: Path) -> None:
    ring = KeyRing(tmp_path)
    key = ring.generate(DOMAIN, "e1", "ed25519")
    dns.set(f"e1._domainkey.{DOMAIN}", "TXT", quoted(key.record()))
    report = await run(dns, ring)
    dkim = [f for f in report.findings if f.check == "dkim"]
    assert [f.status for f in dkim] == [Status.OK, Status.WARNING]


# -- DMARC ---------------------------------------------------------------------------

DMARC = f"_dmarc.{DOMAIN}"


async def test_no_dmarc(dns: DnsServer, keys: KeyRing) -> None:
    dns.set(DMARC, "TXT")
    dmarc = only(await run(dns, keys), "dmarc")
    assert dmarc.status is Status.MISSING
    assert dmarc.fix == Record(
        DMARC, "TXT", "v=DMARC1; p=quarantine; rua=mailto:postmaster@good.test"
    )


async def test_dmarc_p_none_is_a_warning(dns: DnsServer, keys: KeyRing) -> None:
    dns.set(DMARC, "TXT", quoted("v=DMARC1; p=none; rua=mailto:d@good.test; adkim=s"))
    dmarc = only(await run(dns, keys), "dmarc")
    assert dmarc.status is Status.WARNING
    assert "p=none" in dmarc.explanation
    assert dmarc.fix == Record(
        DMARC, "TXT", "v=DMARC1; p=quarantine; rua=mailto:d@good.test; adkim=s"
    )


@pytest.mark.parametrize(
    ("record", "words"),
    [
        ("v=DMARC1; p=rejec", "'p=rejec' is not a valid value"),
        ("v=DMARC1 p=reject", "the policy tag 'p=' is missing"),
        ("v=DMARC1; p=reject; pct=150", "'pct=150'"),
        ("v=DMARC1; p=reject; adkim=x", "'adkim=x'"),
        ("v=DMARC1; p=reject; garbage", "'garbage' is not a tag=value pair"),
    ],
)
async def test_dmarc_syntax_error(dns: DnsServer, keys: KeyRing, record: str, words: str) -> None:
    dns.set(DMARC, "TXT", quoted(record))
    dmarc = only(await run(dns, keys), "dmarc")
    assert dmarc.status is Status.WRONG
    assert words in dmarc.explanation
    assert dmarc.fix is not None
    assert dmarc.fix.value.startswith("v=DMARC1; p=")


async def test_a_subdomain_inherits_the_organizational_record(
    dns: DnsServer, keys: KeyRing
) -> None:
    sub = f"news.{DOMAIN}"
    dns.set(sub, "MX", f"10 {HELO}.")
    report = await run(dns, keys, domain=sub)
    dmarc = only(report, "dmarc")
    assert dmarc.status is Status.OK
    assert "the record of good.test applies to it, with policy reject" in dmarc.explanation
    dns.set(DMARC, "TXT", quoted("v=DMARC1; p=reject; sp=none"))
    dmarc = only(await run(dns, keys, domain=sub), "dmarc")
    assert dmarc.status is Status.WARNING
    assert dmarc.fix == Record(
        f"_dmarc.{sub}", "TXT", f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{sub}"
    )


async def test_dmarc_alignment_is_reported(dns: DnsServer, keys: KeyRing) -> None:
    dns.set(DMARC, "TXT", quoted("v=DMARC1; p=quarantine; adkim=s"))
    dmarc = only(await run(dns, keys), "dmarc")
    assert dmarc.status is Status.OK
    assert "DKIM alignment strict, SPF alignment relaxed" in dmarc.explanation


# -- PTR -----------------------------------------------------------------------------


async def test_ptr_missing(dns: DnsServer, keys: KeyRing) -> None:
    dns.set(REVERSE, "PTR")
    ptr = only(await run(dns, keys), "ptr")
    assert ptr.status is Status.MISSING
    assert ptr.fix == Record(REVERSE, "PTR", f"{HELO}.")


async def test_ptr_not_matching_the_helo_name(dns: DnsServer, keys: KeyRing) -> None:
    dns.set(REVERSE, "PTR", "host-10.isp.test.")
    ptr = only(await run(dns, keys), "ptr")
    assert ptr.status is Status.WRONG
    assert "host-10.isp.test, not the HELO name mail.good.test" in ptr.explanation
    assert ptr.fix == Record(REVERSE, "PTR", f"{HELO}.")


async def test_ptr_matching_a_name_without_that_address(dns: DnsServer, keys: KeyRing) -> None:
    dns.set(HELO, "A", "203.0.113.9")
    dns.set(DOMAIN, "TXT", quoted(f"v=spf1 ip4:{IP} -all"))
    ptr = only(await run(dns, keys), "ptr")
    assert ptr.status is Status.WRONG
    assert ptr.fix == Record(HELO, "A", IP)


async def test_ptr_lookup_failing_counts_as_missing(dns: DnsServer, keys: KeyRing) -> None:
    dns.servfail.add(REVERSE)
    ptr = only(await run(dns, keys), "ptr")
    assert ptr.status is Status.MISSING
    assert "fails" in ptr.explanation
    assert ptr.fix == Record(REVERSE, "PTR", f"{HELO}.")


async def test_other_dns_failures_end_the_check(dns: DnsServer, keys: KeyRing) -> None:
    dns.servfail.add(f"_dmarc.{DOMAIN}")
    with pytest.raises(TemporaryLookupFailure, match="SERVFAIL"):
        await run(dns, keys)


async def test_each_address_gets_its_ptr_checked(dns: DnsServer, keys: KeyRing) -> None:
    dns.set(DOMAIN, "TXT", quoted(f"v=spf1 ip4:{IP} ip6:2001:db8::/32 -all"))
    report = await run(dns, keys, addresses=(IP, "2001:db8::5"))
    ptrs = [f for f in report.findings if f.check == "ptr"]
    assert [f.status for f in ptrs] == [Status.OK, Status.MISSING]
    assert ptrs[1].fix == Record(
        "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
        "PTR",
        f"{HELO}.",
    )


# -- TLS-RPT (MTA-STS has its own file) ----------------------------------------------


async def test_tls_rpt_ok(dns: DnsServer, keys: KeyRing) -> None:
    dns.set(f"_smtp._tls.{DOMAIN}", "TXT", quoted("v=TLSRPTv1; rua=mailto:tls@good.test"))
    report = await run(dns, keys)
    assert only(report, "tls-rpt").status is Status.OK
    assert report.passes


@pytest.mark.parametrize(
    ("record", "words"),
    [
        ("v=TLSRPTv1; rua=tls@good.test", "'tls@good.test' is not a mailto: or https:"),
        ("v=TLSRPTv1;", "'rua=' with a mailto: or https: address is missing"),
        ("v=TLSRPTv1 rua=mailto:tls@good.test", "it must start with 'v=TLSRPTv1;'"),
    ],
)
async def test_tls_rpt_malformed(dns: DnsServer, keys: KeyRing, record: str, words: str) -> None:
    dns.set(f"_smtp._tls.{DOMAIN}", "TXT", quoted(record))
    report = await run(dns, keys)
    rpt = only(report, "tls-rpt")
    assert rpt.status is Status.WRONG
    assert words in rpt.explanation
    assert rpt.fix is not None
    assert rpt.fix.name == f"_smtp._tls.{DOMAIN}"
    assert rpt.fix.value.startswith("v=TLSRPTv1; rua=mailto:")
    assert not report.passes  # optional, but published and broken


# -- this server's address -----------------------------------------------------------


def test_discovery_gives_the_source_address_towards_a_probe() -> None:
    assert discover_sending_addresses(("127.0.0.1",)) == ["127.0.0.1"]
    assert discover_sending_addresses(("127.0.0.1", "127.0.0.1")) == ["127.0.0.1"]


async def test_a_discovered_private_address_is_a_warning(dns: DnsServer, keys: KeyRing) -> None:
    resolver = DnsResolver(dns.settings(timeout=1.0))
    check = DomainCheck(
        resolver, keys, HELO, ("10.0.0.5",), PolicyFetcher(resolver), NOW, discovered=True
    )
    report = await check_domain(DOMAIN, check)
    address = only(report, "address")
    assert address.status is Status.WARNING
    assert "--ip" in address.explanation
