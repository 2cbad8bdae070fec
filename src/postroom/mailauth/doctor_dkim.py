"""DKIM for ``domain check``: our keys (``mailauth.dkim.KeyRing``) are published at their
selectors, unchanged, and long enough (RFC 6376 3.6.1, RFC 8301 3.2, RFC 8463)."""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from postroom.mailauth.dkim import DkimKey, KeyRing
from postroom.mailauth.doctor_report import Finding, Record, Status, texts
from postroom.resolver import Resolver

__all__ = ["check_dkim", "parse_key_record"]

MIN_RSA_BITS = 1024  # RFC 8301 3.2: verifiers ignore shorter keys
GOOD_RSA_BITS = 2048  # RFC 8301 3.2: signers SHOULD use at least 2048


def parse_key_record(text: str) -> dict[str, str]:
    """The tags of a DKIM key record (RFC 6376 3.6.1); whitespace inside values removed."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, _, value = part.partition("=")
        if name.strip():
            tags.setdefault(name.strip().lower(), "".join(value.split()))
    return tags


async def check_dkim(
    domain: str, keys: KeyRing, resolver: Resolver, selector: str | None = None
) -> list[Finding]:
    found = keys.keys(domain)
    if selector is not None:
        chosen = [k for k in found if k.selector == selector]
    else:
        chosen = keys.signing_keys(domain) or found
    if not chosen:
        which = f" with selector {selector!r}" if selector else ""
        return [
            Finding(
                "dkim",
                Status.MISSING,
                f"This server has no DKIM key for {domain}{which}, so its mail is not signed;"
                f" make one with `postroom dkim keygen {domain}` and publish the record it prints.",
            )
        ]
    findings = [await _check_key(key, resolver) for key in chosen]
    if all(k.algorithm == "ed25519" for k in chosen):
        findings.append(
            Finding(
                "dkim",
                Status.WARNING,
                "Only an Ed25519 key: many receivers verify only RSA signatures (RFC 8463 6);"
                f" add one with `postroom dkim keygen {domain}`.",
            )
        )
    return findings


async def _check_key(key: DkimKey, resolver: Resolver) -> Finding:
    ours = key.record()
    fix = Record(key.record_name, "TXT", ours)
    published = [t for t in await texts(resolver, key.record_name) if "p=" in t]
    if not published:
        return Finding(
            "dkim",
            Status.MISSING,
            f"No key record at {key.record_name}: receivers cannot verify the"
            f" {key.algorithm} signatures of selector {key.selector}.",
            fix,
        )
    if len(published) > 1:
        return Finding(
            "dkim",
            Status.WRONG,
            f"{len(published)} key records at {key.record_name}; publish exactly one.",
            fix,
        )
    tags = parse_key_record(published[0])
    public = tags.get("p", "")
    if not public:
        return Finding(
            "dkim",
            Status.WRONG,
            f"The key at {key.record_name} is revoked (empty p=): signatures fail.",
            fix,
        )
    size = _rsa_bits(public) if tags.get("k", "rsa").lower() == "rsa" else None
    short = f" It is also a {size}-bit RSA key." if size and size < GOOD_RSA_BITS else ""
    if public != parse_key_record(ours)["p"]:
        return Finding(
            "dkim",
            Status.WRONG,
            f"The key published at {key.record_name} is not this server's {key.algorithm} key"
            f" for selector {key.selector}: signatures fail.{short}",
            fix,
        )
    if size is not None and size < MIN_RSA_BITS:
        return Finding(
            "dkim",
            Status.WRONG,
            f"The key at {key.record_name} has {size} bits; receivers ignore RSA keys under"
            f" {MIN_RSA_BITS} (RFC 8301). Make a new one with `postroom dkim keygen {key.domain}`.",
        )
    if size is not None and size < GOOD_RSA_BITS:
        return Finding(
            "dkim",
            Status.WARNING,
            f"The key at {key.record_name} is ours but has {size} bits; use {GOOD_RSA_BITS}"
            f" (RFC 8301): make one with `postroom dkim rotate {key.domain} --bits 2048`,"
            f" publish its record, then `postroom dkim activate {key.domain} <its selector>`.",
        )
    what = f"{size}-bit RSA" if size else key.algorithm
    return Finding(
        "dkim",
        Status.OK,
        f"Selector {key.selector}: the published {what} key is this server's.",
    )


def _rsa_bits(public: str) -> int | None:
    try:
        key = load_der_public_key(base64.b64decode(public, validate=True))
    except (ValueError, binascii.Error):
        return None
    return key.key_size if isinstance(key, rsa.RSAPublicKey) else None
