"""DNS for mail: MX hosts of a domain, addresses of a host, and the TXT (and other)
records that SPF, DKIM and DMARC read.

``Resolver`` is the seam (tests and other engines implement it); ``DnsResolver`` is the
dnspython implementation, with the nameservers from ``[dns]`` or the system's.

What a lookup can say, and what a mailer makes of it:

- ``MxResult`` with hosts sorted by preference, equal preferences in random order
  (RFC 5321 5.1: "the order SHOULD be randomized" among equal preferences);
- ``MxResult(null=True)``: the domain publishes a null MX, it takes no mail
  (RFC 7505 3.2: bounce at once with 5.1.10);
- ``MxResult(implicit=True)``: no MX records, the domain itself is the one host
  (RFC 5321 5.1, the implicit MX);
- ``NoSuchDomain``: NXDOMAIN, permanent (5.1.2 bad destination system address);
- ``TemporaryLookupFailure``: SERVFAIL, timeout, no reachable nameserver (4.4.3).

``txt``, ``records`` and ``ptr`` serve the mail-authentication checks (SPF, DKIM, DMARC,
MTA-STS and ``postroom domain check``).
"""

from __future__ import annotations

import ipaddress
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

from postroom.config.settings import DnsSettings
from postroom.errors import ConfigError, PostroomError

__all__ = [
    "DnsResolver",
    "LookupFailed",
    "MxHost",
    "MxResult",
    "NoSuchDomain",
    "Resolver",
    "TemporaryLookupFailure",
    "parse_nameserver",
]


class LookupFailed(PostroomError):
    """A DNS lookup gave no usable answer; ``temporary`` says whether to try again later."""

    temporary: bool = True

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.detail = detail


class NoSuchDomain(LookupFailed):
    """NXDOMAIN: the name does not exist (permanent)."""

    temporary = False


class TemporaryLookupFailure(LookupFailed):
    """SERVFAIL, timeout or no answering nameserver (temporary)."""


@dataclass(frozen=True, slots=True)
class MxHost:
    preference: int
    host: str  # without the final dot, as A-labels


@dataclass(frozen=True, slots=True)
class MxResult:
    domain: str
    hosts: tuple[MxHost, ...]  # the order to try them in
    null: bool = False  # RFC 7505 null MX: the domain accepts no mail
    implicit: bool = False  # no MX records: the domain is its own mail host


class Resolver(Protocol):
    async def mx(self, domain: str) -> MxResult:
        """The domain's mail hosts; raises ``NoSuchDomain`` or ``TemporaryLookupFailure``."""

    async def addresses(self, host: str, ipv6: bool) -> list[str]:
        """The host's IPv4 addresses, then its IPv6 ones (when ``ipv6``); ``[]`` when it
        has none. Raises ``NoSuchDomain`` or ``TemporaryLookupFailure``."""

    async def txt(self, name: str) -> list[bytes]:
        """The name's TXT records, each one's strings joined (RFC 7208 3.3); ``[]`` when it
        has none or does not exist. Raises ``TemporaryLookupFailure``."""

    async def records(self, name: str, rdtype: str) -> list[str]:
        """Records of ``rdtype`` (A, AAAA, MX, PTR) in presentation form, names without
        the final dot; ``[]`` when none or NXDOMAIN. Raises ``TemporaryLookupFailure``."""

    async def ptr(self, address: str) -> list[str]:
        """The reverse names of an IP address, lower case, without the final dot; ``[]``
        when it has none (NXDOMAIN included). Raises ``TemporaryLookupFailure``."""


def parse_nameserver(text: str) -> tuple[str, int]:
    """``"127.0.0.1"``, ``"127.0.0.1:5353"``, ``"::1"``, ``"[::1]:5353"`` -> (address, port)."""
    address, port = text, 53
    if text.startswith("["):
        address, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ConfigError("dns.nameservers", f"cannot parse {text!r}")
            port = _port(text, rest[1:])
    elif text.count(":") == 1:
        address, _, number = text.partition(":")
        port = _port(text, number)
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ConfigError("dns.nameservers", f"{text!r} is not an IP address") from None
    return address, port


def _port(text: str, number: str) -> int:
    if not number.isdigit() or not 0 < int(number) < 65536:
        raise ConfigError("dns.nameservers", f"bad port in {text!r}")
    return int(number)


class DnsResolver:
    """``Resolver`` on dnspython's asyncio resolver (no cache: the answers' TTLs are short
    next to a delivery attempt, and stale MX data is worse than one more query)."""

    def __init__(self, settings: DnsSettings, *, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        if settings.nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(*parse_nameserver(text))
                for text in settings.nameservers
            ]
        else:
            try:
                resolver = dns.asyncresolver.Resolver(configure=True)
            except dns.resolver.NoResolverConfiguration as exc:
                raise ConfigError("dns.nameservers", f"no system resolver: {exc}") from None
        resolver.timeout = settings.timeout
        resolver.lifetime = settings.timeout
        self._resolver = resolver

    async def mx(self, domain: str) -> MxResult:
        answer = await self._query(domain, "MX")
        if answer is None:
            return MxResult(domain, (MxHost(0, domain),), implicit=True)
        records = [(int(r.preference), r.exchange) for r in answer]
        if len(records) == 1 and records[0][1] == dns.name.root:
            return MxResult(domain, (), null=True)
        # A "." among other records is not a null MX (RFC 7505 3): ignore that record.
        hosts = sorted(
            (
                MxHost(pref, name.to_text(omit_final_dot=True).lower())
                for pref, name in records
                if name != dns.name.root
            ),
            key=lambda host: (host.preference, host.host),  # then shuffled: the rng alone decides
        )
        return MxResult(domain, tuple(self._shuffle_ties(hosts)))

    async def addresses(self, host: str, ipv6: bool) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host.strip("[]")))]
        except ValueError:
            pass
        families = ["A", "AAAA"] if ipv6 else ["A"]
        found: list[str] = []
        failure: LookupFailed | None = None
        for rdtype in families:
            try:
                answer = await self._query(host, rdtype)
            except TemporaryLookupFailure as exc:
                failure = exc  # the other family may still answer
                continue
            found.extend(r.address for r in answer or ())
        if failure is not None and not found:
            raise failure
        return found

    async def ptr(self, address: str) -> list[str]:
        reverse = dns.reversename.from_address(address).to_text()
        try:
            answer = await self._query(reverse, "PTR")
        except NoSuchDomain:
            return []
        return [r.target.to_text(omit_final_dot=True).lower() for r in answer or ()]

    async def txt(self, name: str) -> list[bytes]:
        try:
            answer = await self._query(name, "TXT")
        except NoSuchDomain:
            return []
        return [b"".join(r.strings) for r in answer or ()]

    async def records(self, name: str, rdtype: str) -> list[str]:
        try:
            answer = await self._query(name, rdtype)
        except NoSuchDomain:
            return []
        return [r.to_text().removesuffix(".") for r in answer or ()]

    def _shuffle_ties(self, hosts: Sequence[MxHost]) -> list[MxHost]:
        ordered: list[MxHost] = []
        for _, group in groupby(hosts, key=lambda h: h.preference):
            same = list(group)
            self._rng.shuffle(same)
            ordered.extend(same)
        return ordered

    async def _query(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        """The answer, or None when the name exists without records of that type."""
        try:
            return await self._resolver.resolve(name, rdtype, search=False, raise_on_no_answer=True)
        except dns.resolver.NXDOMAIN:
            raise NoSuchDomain(name, "no such domain (NXDOMAIN)") from None
        except dns.resolver.NoAnswer:
            return None
        except dns.exception.Timeout:
            raise TemporaryLookupFailure(name, f"{rdtype} lookup timed out") from None
        except dns.resolver.NoNameservers as exc:
            raise TemporaryLookupFailure(name, f"{rdtype} lookup failed ({_why(exc)})") from None
        except dns.exception.DNSException as exc:
            raise TemporaryLookupFailure(name, f"{rdtype} lookup failed: {exc}") from None


def _why(exc: dns.resolver.NoNameservers) -> str:
    """What the nameservers did: an answer's rcode (``SERVFAIL``, ``REFUSED``) or what
    went wrong on the way (``connection refused``, ``network is unreachable``, ``timed
    out``), from dnspython's list of (server, tcp, port, error, response)."""
    reasons: list[str] = []
    for entry in exc.kwargs.get("errors") or ():
        error = entry[3]
        if isinstance(error, dns.message.Truncated):
            continue  # not a failure: the question was asked again over TCP
        if isinstance(error, dns.exception.Timeout):
            reasons.append("timed out")
        elif isinstance(error, OSError) and error.errno:
            reasons.append(os.strerror(error.errno).lower())
        else:  # an rcode as text, or another failure of the exchange
            reasons.append(str(error) or type(error).__name__)
    return ", ".join(dict.fromkeys(reasons)) or "no nameserver answered"
