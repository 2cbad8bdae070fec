"""DMARC (RFC 7489): find the policy record, check identifier alignment, give the result.

The organizational domain comes from the Public Suffix List snapshot bundled with
``publicsuffixlist`` (RFC 7489 3.2); nothing is fetched at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

from postroom.resolver import Resolver, TemporaryLookupFailure

__all__ = [
    "DmarcPolicy",
    "DmarcRecord",
    "DmarcResult",
    "aligned",
    "check_dmarc",
    "evaluate",
    "find_policy",
    "organizational_domain",
    "parse_record",
]

_POLICIES = ("none", "quarantine", "reject")


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()  # the bundled snapshot, parsed once


def organizational_domain(domain: str) -> str:
    domain = domain.lower().rstrip(".")
    return str(_psl().privatesuffix(domain) or domain)


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    p: str
    sp: str
    adkim: str = "r"  # r (relaxed) | s (strict)
    aspf: str = "r"
    pct: int = 100


@dataclass(frozen=True, slots=True)
class DmarcResult:
    result: str  # pass | fail | none | temperror | permerror
    domain: str  # the RFC5322.From domain
    policy: str = "none"  # the policy that applies to this message (p or sp)

    @property
    def rejects(self) -> bool:
        return self.result == "fail" and self.policy == "reject"


def parse_record(text: str) -> DmarcRecord | None:
    """The record, or None when it is not a DMARC record or ``p`` is missing or bad
    (RFC 7489 6.6.3: then the record is treated as absent)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, eq, value = part.partition("=")
        if eq:
            tags.setdefault(key.strip().lower(), value.strip())
    if tags.get("v") != "DMARC1" or not text.lstrip().startswith("v"):
        return None
    p = tags.get("p", "").lower()
    if p not in _POLICIES:
        return None
    sp = tags.get("sp", p).lower()
    try:
        pct = max(0, min(100, int(tags.get("pct", "100"))))
    except ValueError:
        pct = 100
    return DmarcRecord(
        p=p,
        sp=sp if sp in _POLICIES else p,
        adkim="s" if tags.get("adkim", "r").lower() == "s" else "r",
        aspf="s" if tags.get("aspf", "r").lower() == "s" else "r",
        pct=pct,
    )


def aligned(identifier: str, from_domain: str, mode: str) -> bool:
    """RFC 7489 3.1: strict means equal; relaxed means the same organizational domain."""
    identifier, from_domain = identifier.lower().rstrip("."), from_domain.lower().rstrip(".")
    if mode == "s":
        return identifier == from_domain
    return organizational_domain(identifier) == organizational_domain(from_domain)


async def _record(resolver: Resolver, domain: str) -> DmarcRecord | None:
    found = [r for t in await resolver.txt(f"_dmarc.{domain}") if (r := parse_record(_text(t)))]
    return found[0] if len(found) == 1 else None  # several records: none (6.6.3)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class DmarcPolicy:
    """What DNS says for a From: domain, before any result is known."""

    domain: str  # the RFC5322.From domain
    record: DmarcRecord | None
    subdomain: bool = False  # the record is the organizational domain's (sp applies)
    temperror: bool = False


async def find_policy(resolver: Resolver, from_domain: str) -> DmarcPolicy:
    """RFC 7489 6.6.3: the From: domain's record, else its organizational domain's."""
    from_domain = from_domain.lower().rstrip(".")
    org = organizational_domain(from_domain)
    try:
        record = await _record(resolver, from_domain)
        if record is None and org != from_domain:
            record = await _record(resolver, org)
            return DmarcPolicy(from_domain, record, subdomain=record is not None)
    except TemporaryLookupFailure:
        return DmarcPolicy(from_domain, None, temperror=True)
    return DmarcPolicy(from_domain, record)


def evaluate(
    policy: DmarcPolicy, *, spf_result: str, spf_domain: str, dkim_passes: Sequence[str]
) -> DmarcResult:
    """``dkim_passes``: the d= domains of the signatures that verified."""
    record, domain = policy.record, policy.domain
    if policy.temperror:
        return DmarcResult("temperror", domain)
    if record is None:
        return DmarcResult("none", domain)
    applies = record.sp if policy.subdomain else record.p
    if applies == "reject" and record.pct < 100:
        # RFC 7489 6.6.4: mail outside the pct sample gets the next lower policy; we
        # sample nothing, so a partial reject never refuses mail here.
        applies = "quarantine"
    dkim_ok = any(aligned(d, domain, record.adkim) for d in dkim_passes)
    spf_ok = spf_result == "pass" and aligned(spf_domain, domain, record.aspf)
    return DmarcResult("pass" if dkim_ok or spf_ok else "fail", domain, applies)


async def check_dmarc(
    resolver: Resolver,
    from_domain: str,
    *,
    spf_result: str,
    spf_domain: str,
    dkim_passes: Sequence[str],
) -> DmarcResult:
    policy = await find_policy(resolver, from_domain)
    return evaluate(policy, spf_result=spf_result, spf_domain=spf_domain, dkim_passes=dkim_passes)
