"""DMARC for ``domain check``: the ``_dmarc`` record is there, parses, and asks receivers
to act on failures (RFC 7489 6.3, 6.6.3)."""

from __future__ import annotations

import re

from postroom.mailauth.dmarc import organizational_domain
from postroom.mailauth.doctor_report import Finding, Record, Status, texts, worst
from postroom.resolver import Resolver

__all__ = ["check_dmarc", "parse_dmarc"]

_VERSION = re.compile(r"^v\s*=\s*DMARC1")
_POLICIES = ("none", "quarantine", "reject")
# tag -> a check of its value (RFC 7489 6.3); a tag not named here is ignored, as receivers do.
_TAGS: dict[str, re.Pattern[str]] = {
    "v": re.compile(r"^DMARC1$"),
    "p": re.compile(r"^(none|quarantine|reject)$", re.IGNORECASE),
    "sp": re.compile(r"^(none|quarantine|reject)$", re.IGNORECASE),
    "np": re.compile(r"^(none|quarantine|reject)$", re.IGNORECASE),
    "adkim": re.compile(r"^[rs]$", re.IGNORECASE),
    "aspf": re.compile(r"^[rs]$", re.IGNORECASE),
    "pct": re.compile(r"^(100|[1-9]?[0-9])$"),
    "fo": re.compile(r"^[01ds](:[01ds])*$", re.IGNORECASE),
    "rf": re.compile(r"^[a-z0-9]+(:[a-z0-9]+)*$", re.IGNORECASE),
    "ri": re.compile(r"^[0-9]+$"),
    "rua": re.compile(r"^[a-z][a-z0-9+.\-]*:[^,\s]+(\s*,\s*[a-z][a-z0-9+.\-]*:[^,\s]+)*$", re.I),
    "ruf": re.compile(r"^[a-z][a-z0-9+.\-]*:[^,\s]+(\s*,\s*[a-z][a-z0-9+.\-]*:[^,\s]+)*$", re.I),
}
_ALIGNMENT = {"r": "relaxed", "s": "strict"}


def dmarc_records(txt: list[str]) -> list[str]:
    return [text for text in txt if _VERSION.match(text)]


def parse_dmarc(text: str) -> tuple[dict[str, str], list[str]]:
    """The record's tags (names lower case) and one sentence per error."""
    tags: dict[str, str] = {}
    errors: list[str] = []
    for part in text.split(";"):
        if not part.strip():
            continue
        name, equals, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not equals or not re.fullmatch(r"[a-z0-9]+", name):
            errors.append(f"'{part.strip()}' is not a tag=value pair")
        elif name in tags:
            errors.append(f"'{name}' appears twice")
        elif name in _TAGS and not _TAGS[name].match(value):
            errors.append(f"'{name}={value}' is not a valid value for {name}")
        else:
            tags[name] = value
    if "p" not in tags and not any(e.startswith("'p=") for e in errors):
        errors.append("the policy tag 'p=' is missing")
    return tags, errors


async def check_dmarc(domain: str, resolver: Resolver) -> Finding:
    name = f"_dmarc.{domain}"
    found = dmarc_records(await texts(resolver, name))
    good = f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"
    if not found:
        inherited = await _inherited(domain, resolver)
        if inherited is not None:
            org, policy = inherited
            status = Status.WARNING if policy == "none" else Status.OK
            return Finding(
                "dmarc",
                status,
                f"No record of its own; the record of {org} applies to it, with policy"
                f" {policy} for subdomains"
                + (": mail that fails is still delivered." if policy == "none" else "."),
                Record(name, "TXT", good) if status is not Status.OK else None,
            )
        return Finding(
            "dmarc",
            Status.MISSING,
            f"No DMARC record at {name}: receivers decide alone what to do with mail that"
            f" fails SPF and DKIM, and you get no reports.",
            Record(name, "TXT", good),
        )
    if len(found) > 1:
        return Finding(
            "dmarc",
            Status.WRONG,
            f"{len(found)} DMARC records at {name}: receivers then use none (RFC 7489 6.6.3).",
            Record(name, "TXT", found[0] if not parse_dmarc(found[0])[1] else good),
        )
    tags, errors = parse_dmarc(found[0])
    problems = [(Status.WRONG, e) for e in errors]
    policy = tags.get("p", "").lower()
    if policy == "none":
        problems.append(
            (Status.WARNING, "p=none only asks for reports: mail that fails is still delivered")
        )
    if tags.get("pct", "100") != "100":
        problems.append((Status.WARNING, f"pct={tags['pct']} applies the policy to part of it"))
    status = worst(s for s, _ in problems)
    alignment = (
        f"DKIM alignment {_ALIGNMENT[tags.get('adkim', 'r').lower()]},"
        f" SPF alignment {_ALIGNMENT[tags.get('aspf', 'r').lower()]}"
        if not errors
        else ""
    )
    if status is Status.OK:
        return Finding(
            "dmarc",
            Status.OK,
            f"Policy {policy}; {alignment}: mail from this server is signed with d={domain}"
            f" and sent from {domain} addresses, so it aligns either way.",
        )
    return Finding(
        "dmarc",
        status,
        f"'{found[0]}': " + "; ".join(p for _, p in problems) + ".",
        Record(name, "TXT", _fixed(tags, domain)),
    )


async def _inherited(domain: str, resolver: Resolver) -> tuple[str, str] | None:
    """RFC 7489 6.6.3: without its own record, the organizational domain's applies (sp=)."""
    org = organizational_domain(domain)
    if org == domain:
        return None
    found = dmarc_records(await texts(resolver, f"_dmarc.{org}"))
    if len(found) != 1:
        return None
    tags, errors = parse_dmarc(found[0])
    if errors:
        return None
    return org, tags.get("sp", tags["p"]).lower()


def _fixed(tags: dict[str, str], domain: str) -> str:
    """The record with its valid tags kept, an enforcing policy and full coverage."""
    kept = {k: v for k, v in tags.items() if k not in ("v", "p", "pct")}
    policy = tags.get("p", "").lower()
    kept.setdefault("rua", f"mailto:postmaster@{domain}")
    parts = ["v=DMARC1", f"p={policy if policy in _POLICIES[1:] else 'quarantine'}"]
    parts.extend(f"{k}={v}" for k, v in kept.items())
    return "; ".join(parts)
