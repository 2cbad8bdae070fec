"""SPF linting for ``domain check``: syntax, the ``all`` qualifier, the 10-lookup limit,
whether given addresses are authorized, and a corrected record (RFC 7208).

This judges a domain's own record before mail is sent; evaluating inbound mail is
``mailauth.spf``'s job, and its evaluator answers whether an address is authorized, so
the check and inbound mail agree. The walk here counts lookups through every include
and redirect and collects the networks a flattened record would list; a term with a
macro is counted but not followed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from postroom.mailauth import spf
from postroom.mailauth.doctor_report import Finding, Record, Status, texts, worst
from postroom.resolver import LookupFailed, NoSuchDomain, Resolver

__all__ = ["SpfLint", "SpfRecord", "Term", "check_spf", "lint", "parse", "spf_records"]

MAX_LOOKUPS = 10  # RFC 7208 4.6.4: more DNS-querying terms than this is a permerror
WALK_LIMIT = 5 * MAX_LOOKUPS  # stop walking there: the record is broken anyway
MAX_VOID_LOOKUPS = 2  # RFC 7208 4.6.4: lookups answering NXDOMAIN or nothing

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_VERSION = re.compile(r"^v=spf1(?: |$)", re.IGNORECASE)
_MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
_LOOKUP_TERMS = frozenset({"include", "a", "mx", "ptr", "exists"})  # and redirect=
_DIRECTIVE = re.compile(
    r"^(?P<q>[+\-~?]?)(?P<name>[a-z0-9]+)(?::(?P<arg>[^/]*))?(?P<cidr>(?:/\d+)?(?://\d+)?)$",
    re.IGNORECASE,
)
_MODIFIER = re.compile(r"^(?P<name>[a-z][a-z0-9_.\-]*)=(?P<arg>.*)$", re.IGNORECASE)
_DOMAIN_SPEC = re.compile(r"^[A-Za-z0-9_.\-%{}+,/=]+$")
_CIDR = re.compile(r"^(?:/(\d+))?(?://(\d+))?$")


@dataclass(frozen=True, slots=True)
class Term:
    """One directive (``-ip4:192.0.2.0/24``) or modifier (``redirect=_spf.example.com``)."""

    text: str
    name: str  # lower case: "ip4", "include", "redirect", ...
    qualifier: str = "+"
    arg: str | None = None
    cidr4: int | None = None
    cidr6: int | None = None
    modifier: bool = False

    @property
    def lookups(self) -> int:
        return 1 if self.name in _LOOKUP_TERMS else 0


@dataclass(frozen=True, slots=True)
class SpfRecord:
    text: str
    terms: tuple[Term, ...]
    errors: tuple[str, ...]  # one plain sentence per bad term

    @property
    def all_term(self) -> Term | None:
        return next((t for t in self.terms if t.name == "all"), None)

    @property
    def redirect(self) -> str | None:
        return next((t.arg for t in self.terms if t.name == "redirect"), None)


@dataclass(slots=True)
class SpfLint:
    """What ``lint`` found: lookups counted over every include and redirect, problems met
    below the top record, and the networks it authorizes."""

    lookups: int = 0
    void_lookups: int = 0
    problems: list[str] = field(default_factory=list)
    # The ip4/ip6 networks the whole tree names, and the a/mx addresses it resolved:
    # what a flattened record would list.
    networks: list[IpNetwork] = field(default_factory=list)
    dynamic: bool = False  # exists, ptr or a macro: cannot be flattened into addresses
    uses_ptr: bool = False


def spf_records(txt: Iterable[str]) -> list[str]:
    """The TXT strings that are SPF records (RFC 7208 4.5: those starting ``v=spf1``)."""
    return [text for text in txt if _VERSION.match(text)]


def parse(text: str) -> SpfRecord:
    terms: list[Term] = []
    errors: list[str] = []
    words = text.split(" ")[1:]  # words[0] is "v=spf1"
    for word in words:
        if not word:
            continue  # several spaces in a row are allowed
        term = _term(word)
        if isinstance(term, str):
            errors.append(term)
        else:
            terms.append(term)
    names = [t.name for t in terms]
    for modifier in ("redirect", "exp"):
        if names.count(modifier) > 1:
            errors.append(f"'{modifier}=' appears more than once (RFC 7208 6)")
    return SpfRecord(text, tuple(terms), tuple(errors))


def _term(word: str) -> Term | str:
    if match := _MODIFIER.match(word):
        name, arg = match["name"].lower(), match["arg"]
        if name in ("redirect", "exp") and not _DOMAIN_SPEC.match(arg):
            return f"'{word}' does not name a domain"
        return Term(word, name, arg=arg, modifier=True)
    match = _DIRECTIVE.match(word)
    if match is None or match["name"].lower() not in _MECHANISMS:
        return f"'{word}' is not an SPF mechanism or modifier"
    name, arg, cidr = match["name"].lower(), match["arg"], match["cidr"]
    qualifier = match["q"] or "+"
    if name == "all" and (arg is not None or cidr):
        return f"'{word}': 'all' takes no argument"
    if name in ("include", "exists") and not arg:
        return f"'{word}' needs a domain ('{name}:example.com')"
    if name in ("ip4", "ip6"):
        return _ip_term(word, name, qualifier, arg, cidr)
    if arg is not None and not _DOMAIN_SPEC.match(arg):
        return f"'{word}' does not name a domain"
    if cidr and name not in ("a", "mx"):
        return f"'{word}': only a, mx, ip4 and ip6 take a prefix length"
    lengths = _CIDR.match(cidr)
    c4 = int(lengths[1]) if lengths and lengths[1] else None
    c6 = int(lengths[2]) if lengths and lengths[2] else None
    if (c4 is not None and c4 > 32) or (c6 is not None and c6 > 128):
        return f"'{word}': prefix length out of range"
    return Term(word, name, qualifier, arg, c4, c6)


def _ip_term(word: str, name: str, qualifier: str, arg: str | None, cidr: str) -> Term | str:
    if not arg or cidr.startswith("//"):
        return f"'{word}' needs an address ('{name}:...')"
    network = arg + cidr
    try:
        parsed = ipaddress.ip_network(network, strict=False)
    except ValueError:
        return f"'{word}': {network!r} is not an IP{name[-1]} network"
    if (name == "ip4") != (parsed.version == 4):
        return f"'{word}': {network!r} is not an IP{name[-1]} network"
    return Term(word, name, qualifier, str(parsed))


async def lint(record: SpfRecord, domain: str, resolver: Resolver) -> SpfLint:
    """Walk the record and everything it includes or redirects to."""
    walker = _Walker(resolver)
    await walker.walk(record, domain, (domain,))
    return walker.lint


class _Walker:
    """Visits every term of a record tree once, as a receiver that matched nothing would:
    counts lookups and collects the networks that authorize."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.lint = SpfLint()

    async def walk(self, record: SpfRecord, domain: str, chain: tuple[str, ...]) -> None:
        for term in record.terms:
            if not term.modifier:
                await self._visit(term, domain, chain)
        if record.redirect and record.all_term is None:  # else redirect= is ignored (6.1)
            self.lint.lookups += 1
            target = await self._record(record.redirect, chain, "redirect")
            if target is not None:
                await self.walk(target, record.redirect, (*chain, record.redirect))

    async def _visit(self, term: Term, domain: str, chain: tuple[str, ...]) -> None:
        self.lint.lookups += term.lookups
        target = term.arg or domain
        if "%" in target:
            self.lint.dynamic = True  # a macro: depends on the message
            return
        match term.name:
            case "ip4" | "ip6":
                self._collect(term, [ipaddress.ip_network(term.arg or "", strict=False)])
            case "a":
                self._within(await self._addresses(target), term)
            case "mx":
                self._within(await self._mx_addresses(target), term)
            case "include":
                included = await self._record(target, chain, "include")
                if included is not None:
                    await self.walk(included, target, (*chain, target))
            case "exists":
                self.lint.dynamic = True
                await self._addresses(target, ipv6=False)
            case "ptr":  # deprecated (RFC 7208 5.5), and slow for receivers
                self.lint.dynamic = True
                self.lint.uses_ptr = True

    def _within(self, found: list[str], term: Term) -> None:
        networks: list[IpNetwork] = []
        for text in found:
            address = ipaddress.ip_address(text)
            prefix = term.cidr4 if address.version == 4 else term.cidr6
            networks.append(
                ipaddress.ip_network(f"{address}/{prefix or address.max_prefixlen}", strict=False)
            )
        self._collect(term, networks)

    def _collect(self, term: Term, networks: list[IpNetwork]) -> None:
        if term.qualifier == "+":  # only what authorizes can be flattened into ip4/ip6
            self.lint.networks.extend(n for n in networks if n not in self.lint.networks)

    async def _addresses(self, name: str, ipv6: bool = True) -> list[str]:
        try:
            found = await self.resolver.addresses(name, ipv6=ipv6)
        except NoSuchDomain:
            found = []
        if not found:
            self._void(name)
        return found

    async def _mx_addresses(self, domain: str) -> list[str]:
        try:
            mx = await self.resolver.mx(domain)
        except NoSuchDomain:
            self._void(domain)
            return []
        if mx.implicit or mx.null:  # RFC 7208 5.4: no implicit MX for the mx mechanism
            self._void(domain)
            return []
        found: list[str] = []
        for host in mx.hosts[:MAX_LOOKUPS]:
            found.extend(await self.resolver.addresses(host.host, ipv6=True))
        return found

    async def _record(self, domain: str, chain: tuple[str, ...], how: str) -> SpfRecord | None:
        if domain.lower() in (c.lower() for c in chain):
            self.lint.problems.append(f"{how}:{domain} loops back to itself")
            return None
        if self.lint.lookups > WALK_LIMIT:
            return None  # far over the limit already; the count says enough
        try:
            records = spf_records(await texts(self.resolver, domain))
        except LookupFailed as exc:
            self.lint.problems.append(f"{how}:{domain}: {exc.detail}")
            return None
        if len(records) != 1:
            what = "no SPF record" if not records else "more than one SPF record"
            self.lint.problems.append(f"{how}:{domain} has {what}, which is a permerror")
            return None
        record = parse(records[0])
        self.lint.problems.extend(f"{how}:{domain}: {error}" for error in record.errors)
        return record

    def _void(self, name: str) -> None:
        self.lint.void_lookups += 1
        if self.lint.void_lookups == MAX_VOID_LOOKUPS + 1:
            self.lint.problems.append(
                f"more than {MAX_VOID_LOOKUPS} lookups find nothing (the last: {name}),"
                " which receivers may treat as a permerror (RFC 7208 4.6.4)"
            )


async def check_spf(
    domain: str, addresses: Sequence[str], resolver: Resolver, *, helo: str, now: float
) -> Finding:
    """The domain's SPF record judged; whether it authorizes ``addresses`` is the answer
    of ``mailauth.spf``, the evaluator inbound mail gets, for MAIL FROM postmaster@domain."""
    found = spf_records(await texts(resolver, domain))
    if not found:
        return Finding(
            "spf",
            Status.MISSING,
            f"No SPF record: receivers cannot tell which servers may send mail as {domain}.",
            Record(domain, "TXT", _build([], addresses)),
        )
    problems: list[tuple[Status, str]] = []
    if len(found) > 1:
        problems.append(
            (Status.WRONG, f"{len(found)} SPF records: receivers treat more than one as an"
             " error (RFC 7208 3.2); publish only the one given here, which merges them")
        )  # fmt: skip
    record = _merge([parse(text) for text in found])
    problems.extend((Status.WRONG, error) for error in record.errors)
    walked = await lint(record, domain, resolver)
    problems.extend((Status.WRONG, p) for p in walked.problems)
    if walked.uses_ptr:
        problems.append((Status.WARNING, "'ptr' should not be used (RFC 7208 5.5)"))
    problems.extend(_judge_all(record))
    if walked.lookups > MAX_LOOKUPS:
        problems.append(
            (Status.WRONG, f"it needs {walked.lookups} DNS lookups; more than {MAX_LOOKUPS} is an"
             " error for receivers (RFC 7208 4.6.4), so the fix lists the addresses instead")
        )  # fmt: skip
    results = {a: await _evaluate(domain, a, resolver, helo, now) for a in addresses}
    unauthorized = [a for a, result in results.items() if result != "pass"]
    if unauthorized:
        which = ", ".join(f"{a} ({results[a]})" for a in unauthorized)
        problems.append(
            (Status.WRONG, f"this server's address is not authorized: SPF gives {which},"
             " so receivers may refuse its mail")
        )  # fmt: skip
    status = worst(s for s, _ in problems)
    if status is Status.OK:
        return Finding(
            "spf",
            Status.OK,
            f"'{record.text}' authorizes this server ({', '.join(addresses)}).",
        )
    explanation = (
        " and ".join(f"'{text}'" for text in found) + ": " + "; ".join(p for _, p in problems)
    )
    flatten = walked.lookups > MAX_LOOKUPS
    if flatten and walked.dynamic:
        explanation += "; the fix cannot keep its exists, ptr or macro terms"
    redirect = record.redirect if record.all_term is None and not flatten else None
    fixed = _build(_kept_terms(record, walked, flatten), unauthorized, redirect)
    return Finding("spf", status, explanation + ".", Record(domain, "TXT", fixed))


async def _evaluate(domain: str, address: str, resolver: Resolver, helo: str, now: float) -> str:
    found = await spf.check_spf(
        resolver, ip=address, sender=f"postmaster@{domain}", helo=helo, now=now
    )
    return found.result


def _judge_all(record: SpfRecord) -> list[tuple[Status, str]]:
    term = record.all_term
    if term is None:
        if record.redirect:
            return []  # the redirected record decides
        return [(Status.WRONG, "it has no 'all' at the end, so mail from any other server is"
                 " 'neutral', as if there were no SPF; end it with -all")]  # fmt: skip
    match term.qualifier:
        case "+":
            return [(Status.WRONG, "'+all' authorizes every server on the internet")]
        case "?":
            return [(Status.WRONG, "'?all' makes mail from any other server 'neutral', as if"
                     " there were no SPF; use -all")]  # fmt: skip
        case "~":
            return [(Status.WARNING, "'~all' only marks other servers' mail as suspicious"
                     " (softfail); -all tells receivers to refuse it")]  # fmt: skip
    return []


def _merge(records: list[SpfRecord]) -> SpfRecord:
    if len(records) == 1:
        return records[0]
    terms: list[Term] = []
    for record in records:
        terms.extend(t for t in record.terms if t.name != "all" and t not in terms)
    errors = tuple(e for r in records for e in r.errors)
    text = " ".join(["v=spf1", *(t.text for t in terms), "-all"])
    return SpfRecord(text, (*terms, Term("-all", "all", "-")), errors)


def _kept_terms(record: SpfRecord, walked: SpfLint, flatten: bool) -> list[str]:
    """The record's good terms, or, over the lookup limit, the addresses they stand for."""
    if not flatten:
        return [t.text for t in record.terms if t.name not in ("all", "ptr", "redirect")]
    return [f"ip{n.version}:{_network_text(n)}" for n in _collapse(walked.networks)]


def _build(terms: list[str], addresses: Iterable[str], redirect: str | None = None) -> str:
    ours = [f"ip{ipaddress.ip_address(a).version}:{a}" for a in addresses]
    kept = [t for t in terms if t not in ours]
    ending = [f"redirect={redirect}"] if redirect else ["-all"]
    return " ".join(["v=spf1", *ours, *kept, *ending])


def _network_text(network: IpNetwork) -> str:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def _collapse(networks: list[IpNetwork]) -> list[IpNetwork]:
    v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in networks if isinstance(n, ipaddress.IPv6Network)]
    return [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]
