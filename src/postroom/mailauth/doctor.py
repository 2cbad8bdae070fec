"""``postroom domain check``: is a domain set up to send mail from this server?

Looks up, through postroom's resolver, and judges: MX, SPF (syntax, ``all``, the lookup
limit, this server's addresses authorized), DKIM (our keys published, unchanged, long
enough), DMARC (present, policy, alignment), the PTR of each sending address and whether
it names the HELO name, and MTA-STS and TLS-RPT when published. Each check gives a
``Finding``: ok, warning, missing or wrong, in plain words, and, when not ok, the record
to publish. The checks only read: DNS, the local DKIM keys, the MTA-STS policy file.

"This server's addresses" are given (``--ip``, ``delivery.sending_addresses``) or found
with ``discover_sending_addresses``: the source address the system would choose for a
datagram to the internet (a UDP ``connect`` sends no packet).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from postroom.config.settings import Settings
from postroom.errors import PostroomError
from postroom.mail.address import to_ascii_domain
from postroom.mailauth.dkim import KeyRing
from postroom.mailauth.doctor_dkim import check_dkim
from postroom.mailauth.doctor_dmarc import check_dmarc
from postroom.mailauth.doctor_mtasts import PolicyFetcher, check_mta_sts, check_tls_rpt
from postroom.mailauth.doctor_report import Finding, Record, Report, Status
from postroom.mailauth.doctor_spf import check_spf
from postroom.resolver import (
    DnsResolver,
    MxResult,
    NoSuchDomain,
    Resolver,
    TemporaryLookupFailure,
)

__all__ = [
    "DomainCheck",
    "DomainNotFound",
    "Finding",
    "PolicyFetcher",
    "Record",
    "Report",
    "Status",
    "check_domain",
    "discover_sending_addresses",
]

# Where a datagram "to the internet" would go; connect() on UDP only picks the route.
# Documentation addresses (RFC 5737, RFC 3849): never contacted.
INTERNET_PROBES = ("192.0.2.1", "2001:db8::1")


class DomainNotFound(PostroomError):
    """The domain does not exist in DNS (NXDOMAIN)."""

    def __init__(self, domain: str) -> None:
        super().__init__(f"{domain}: no such domain (NXDOMAIN)")
        self.domain = domain


def discover_sending_addresses(probes: Sequence[str] = INTERNET_PROBES) -> list[str]:
    """The source address the system picks towards each probe (no packet is sent)."""
    found: list[str] = []
    for probe in probes:
        family = socket.AF_INET6 if ":" in probe else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect((probe, 9))
                address = str(sock.getsockname()[0])
        except OSError:
            continue  # no route for this family
        if address not in found:
            found.append(address)
    return found


@dataclass(frozen=True, slots=True)
class DomainCheck:
    """What the checks need; everything passed in."""

    resolver: Resolver
    keys: KeyRing
    hostname: str  # the HELO name
    addresses: tuple[str, ...]  # this server's sending addresses
    fetcher: PolicyFetcher
    now: float  # for the id of a suggested MTA-STS record
    discovered: bool = False  # the addresses were guessed, not configured

    @classmethod
    def for_settings(
        cls, settings: Settings, now: float, addresses: Sequence[str] = ()
    ) -> DomainCheck:
        """The check of this server as configured: ``addresses`` given, else
        ``delivery.sending_addresses``, else discovered; PostroomError when none is found."""
        found = list(addresses) or list(settings.delivery.sending_addresses)
        discovered = not found
        if discovered:
            found = discover_sending_addresses()
        if not found:
            raise PostroomError("cannot find this server's outbound address; give it with --ip")
        resolver = DnsResolver(settings.dns)
        return cls(
            resolver=resolver,
            keys=KeyRing(settings.data_dir),
            hostname=to_ascii_domain(settings.hostname),
            addresses=tuple(found),
            fetcher=PolicyFetcher(resolver, timeout=min(settings.dns.timeout, 10.0)),
            now=now,
            discovered=discovered,
        )


async def check_domain(domain: str, check: DomainCheck, selector: str | None = None) -> Report:
    """Raises ``DomainNotFound``, or ``LookupFailed`` when DNS does not answer."""
    try:
        mx = await check.resolver.mx(domain)
    except NoSuchDomain:
        raise DomainNotFound(domain) from None
    hosts = [h.host for h in mx.hosts] if not mx.implicit else []
    findings = [await _check_mx(mx, check)]
    findings.append(
        await check_spf(domain, check.addresses, check.resolver, helo=check.hostname, now=check.now)
    )
    findings.extend(await check_dkim(domain, check.keys, check.resolver, selector))
    findings.append(await check_dmarc(domain, check.resolver))
    findings.extend(await asyncio.gather(*(_check_ptr(a, check) for a in check.addresses)))
    if check.discovered:
        findings.extend(_private_addresses(check.addresses))
    findings.append(
        await check_mta_sts(
            domain, hosts, check.resolver, check.fetcher, check.now, hostname=check.hostname
        )
    )
    findings.append(await check_tls_rpt(domain, check.resolver))
    return Report(domain, check.hostname, check.addresses, tuple(findings))


async def _check_mx(mx: MxResult, check: DomainCheck) -> Finding:
    fix = Record(mx.domain, "MX", f"10 {check.hostname}.")
    if mx.null:
        return Finding(
            "mx",
            Status.WRONG,
            f"{mx.domain} publishes a null MX (RFC 7505): it takes no mail, so replies and"
            " bounces to its addresses are lost, and many receivers refuse mail from it.",
            fix,
        )
    if mx.implicit:
        return Finding(
            "mx",
            Status.MISSING,
            f"{mx.domain} has no MX record: replies and bounces go to its A record, if any,"
            " and some receivers refuse mail from a domain that cannot receive.",
            fix,
        )
    dead = []
    for host in mx.hosts:
        try:
            if not await check.resolver.addresses(host.host, ipv6=True):
                dead.append(host.host)
        except NoSuchDomain:
            dead.append(host.host)
    names = ", ".join(h.host for h in mx.hosts)
    if dead:
        status = Status.WRONG if len(dead) == len(mx.hosts) else Status.WARNING
        return Finding(
            "mx",
            status,
            f"MX hosts without an address: {', '.join(dead)}; remove those MX records or"
            " give the hosts A/AAAA records.",
            fix,
        )
    return Finding("mx", Status.OK, f"Mail for {mx.domain} goes to {names}.")


async def _check_ptr(address: str, check: DomainCheck) -> Finding:
    """Forward-confirmed reverse DNS: the address's PTR names the HELO name, and that name
    has the address (receivers such as Gmail refuse mail from addresses failing this)."""
    reverse = ipaddress.ip_address(address).reverse_pointer
    helo = check.hostname.lower().rstrip(".")
    ptr_fix = Record(reverse, "PTR", f"{helo}.")
    try:
        names = await check.resolver.ptr(address)
    except TemporaryLookupFailure as exc:
        return Finding(
            "ptr",
            Status.MISSING,
            f"The reverse lookup of {address} fails ({exc.detail}); receivers treat that as"
            f" no reverse name. Ask whoever runs the address to point it at {helo}.",
            ptr_fix,
        )
    if not names:
        return Finding(
            "ptr",
            Status.MISSING,
            f"{address} has no reverse name (PTR); ask whoever runs the address (your hosting"
            f" provider) to point it at the HELO name {helo}.",
            ptr_fix,
        )
    if helo not in names:
        return Finding(
            "ptr",
            Status.WRONG,
            f"{address} has the reverse name {', '.join(names)}, not the HELO name {helo};"
            " change the PTR (at your hosting provider) or set hostname to match.",
            ptr_fix,
        )
    try:
        forward = await check.resolver.addresses(helo, ipv6=True)
    except NoSuchDomain:
        forward = []
    if address not in forward:
        kind = "AAAA" if ipaddress.ip_address(address).version == 6 else "A"
        return Finding(
            "ptr",
            Status.WRONG,
            f"{address} names {helo}, but {helo} does not have the address {address}.",
            Record(helo, kind, address),
        )
    return Finding("ptr", Status.OK, f"{address} is {helo}, the HELO name, both ways.")


def _private_addresses(addresses: Sequence[str]) -> list[Finding]:
    private = [a for a in addresses if not ipaddress.ip_address(a).is_global]
    if not private:
        return []
    return [
        Finding(
            "address",
            Status.WARNING,
            f"This server's address {', '.join(private)} is not a public one, so receivers"
            " see another (NAT); give the public address with --ip or"
            " delivery.sending_addresses.",
        )
    ]
