"""MTA-STS (RFC 8461) and TLS-RPT (RFC 8460) for ``domain check``; both optional.

The policy file is fetched from ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` as
a sending server would: the host name resolved through postroom's resolver, the
certificate verified for that name, no redirects (RFC 8461 3.3), 64 KiB at most.
``PolicyFetcher`` takes the port and the TLS context so that tests can serve the file
from loopback with their own CA; ``postroom domain check`` uses port 443 and the
system's CAs.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
import time
from dataclasses import dataclass

import httpx

from postroom.mailauth.doctor_report import Finding, Record, Status, texts, worst
from postroom.resolver import LookupFailed, Resolver

__all__ = ["PolicyFetcher", "check_mta_sts", "check_tls_rpt", "parse_policy"]

POLICY_PATH = "/.well-known/mta-sts.txt"
MAX_POLICY = 64 * 1024  # RFC 8461 3.3 lets senders stop there
MAX_AGE = 31_557_600  # RFC 8461 3.2: about a year
_STS_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_FIELD = re.compile(r"^[A-Za-z0-9_.\-]{1,32}=[\x21-\x3a\x3c\x3e-\x7e]+$")
_TLSRPT_URI = re.compile(r"^(mailto:[^@\s,!]+@[^\s,!]+|https://[^\s,!]+)(![0-9]+[kmgt]?)?$")


class PolicyFetchError(Exception):
    """The policy file could not be fetched; the message says why, in plain words."""


@dataclass(frozen=True, slots=True)
class PolicyFetcher:
    """Fetches MTA-STS policy files over HTTPS."""

    resolver: Resolver
    port: int = 443
    tls: ssl.SSLContext | None = None  # None: the system's CAs
    timeout: float = 10.0

    async def fetch(self, domain: str) -> str:
        host = f"mta-sts.{domain}"
        try:
            addresses = await self.resolver.addresses(host, ipv6=True)
        except LookupFailed as exc:
            raise PolicyFetchError(f"{host}: {exc.detail}") from None
        if not addresses:
            raise PolicyFetchError(f"{host} has no address")
        verify: ssl.SSLContext | bool = self.tls or True
        failures = []
        async with httpx.AsyncClient(verify=verify, timeout=self.timeout) as client:
            for address in addresses:
                try:
                    return await self._get(client, host, address)
                except (httpx.HTTPError, ssl.SSLError, PolicyFetchError) as exc:
                    failures.append(f"{address}: {exc or type(exc).__name__}")
        raise PolicyFetchError(f"https://{host}{POLICY_PATH}: " + "; ".join(failures))

    async def _get(self, client: httpx.AsyncClient, host: str, address: str) -> str:
        literal = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
        url = f"https://{literal}:{self.port}{POLICY_PATH}"
        # Connect to the address we resolved, but speak TLS and HTTP to the host name.
        request = client.build_request(
            "GET", url, headers={"Host": host}, extensions={"sni_hostname": host}
        )
        response = await client.send(request, stream=True, follow_redirects=False)
        try:
            if response.status_code != 200:
                raise PolicyFetchError(f"HTTP {response.status_code} (it must be 200)")
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_POLICY:
                    raise PolicyFetchError(f"larger than {MAX_POLICY} bytes")
        finally:
            await response.aclose()
        return body.decode("utf-8", "replace")


def parse_policy(text: str) -> tuple[dict[str, list[str]], list[str]]:
    """The policy's fields (``mx`` may repeat) and one sentence per error (RFC 8461 3.2)."""
    fields: dict[str, list[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.strip():
            name, colon, value = line.partition(":")
            if colon:
                fields.setdefault(name.strip(), []).append(value.strip())
    errors = []
    if fields.get("version") != ["STSv1"]:
        errors.append("'version: STSv1' is missing")
    mode = fields.get("mode", [""])
    if len(mode) != 1 or mode[0] not in ("enforce", "testing", "none"):
        errors.append("'mode' must be enforce, testing or none")
    age = fields.get("max_age", [""])
    if len(age) != 1 or not age[0].isdigit() or int(age[0]) > MAX_AGE:
        errors.append(f"'max_age' must be a number of seconds up to {MAX_AGE}")
    if mode != ["none"] and not fields.get("mx"):
        errors.append("no 'mx' lines")
    return fields, errors


def _sts_txt_ok(text: str) -> bool:
    """RFC 8461 3.1: ``v=STSv1; id=<1-32 letters and digits>``, maybe more fields."""
    fields = [f.strip() for f in text.split(";")]
    if fields and not fields[-1]:
        fields.pop()  # a final ";" is allowed
    if fields[:1] != ["v=STSv1"] or not all(_FIELD.match(f) for f in fields[1:]):
        return False
    ids = [f[3:] for f in fields[1:] if f.startswith("id=")]
    return len(ids) == 1 and bool(_STS_ID.match(ids[0]))


def _mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 4.1: ``*.`` matches exactly one leftmost label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        return "." in host and host.split(".", 1)[1] == pattern[2:]
    return pattern == host


async def check_mta_sts(
    domain: str,
    mx_hosts: list[str],
    resolver: Resolver,
    fetcher: PolicyFetcher,
    now: float,
    *,
    hostname: str,
) -> Finding:
    """``hostname`` stands in the suggested policy when the domain has no MX hosts."""
    name = f"_mta-sts.{domain}"
    found = [t for t in await texts(resolver, name) if t.startswith("v=STSv1")]
    url = f"https://mta-sts.{domain}{POLICY_PATH}"
    txt_fix = Record(name, "TXT", f"v=STSv1; id={time.strftime('%Y%m%d%H%M%S', time.gmtime(now))}")
    policy_fix = Record(url, "file", _policy(mx_hosts or [hostname]))
    if not found:
        return Finding("mta-sts", Status.OK, "Not published (optional).", required=False)
    if len(found) > 1 or not _sts_txt_ok(found[0]):
        what = f"{len(found)} records" if len(found) > 1 else f"'{found[0]}' is malformed"
        return Finding(
            "mta-sts",
            Status.WRONG,
            f"{name}: {what}; publish one 'v=STSv1; id=...' record.",
            txt_fix,
            required=False,
        )
    try:
        text = await fetcher.fetch(domain)
    except PolicyFetchError as exc:
        return Finding(
            "mta-sts",
            Status.WRONG,
            f"{name} announces a policy, but it cannot be fetched ({exc}); publish the file"
            " below, or remove the TXT record.",
            policy_fix,
            required=False,
        )
    fields, errors = parse_policy(text)
    problems = [(Status.WRONG, e) for e in errors]
    uncovered = [h for h in mx_hosts if not any(_mx_matches(p, h) for p in fields.get("mx", []))]
    mode = fields.get("mode", [""])[0]
    if uncovered and mode != "none":
        problems.append(
            (Status.WRONG, f"the policy's mx lines do not cover {', '.join(uncovered)}")
        )
    if mode in ("testing", "none"):
        problems.append((Status.WARNING, f"mode {mode}: senders do not enforce TLS yet"))
    status = worst(s for s, _ in problems)
    if status is Status.OK:
        return Finding(
            "mta-sts", Status.OK, f"Policy mode {mode} covers every MX host.", required=False
        )
    return Finding(
        "mta-sts",
        status,
        f"{url}: " + "; ".join(p for _, p in problems) + ".",
        policy_fix,
        required=False,
    )


def _policy(mx_hosts: list[str]) -> str:
    lines = ["version: STSv1", "mode: enforce", *(f"mx: {h}" for h in mx_hosts), "max_age: 604800"]
    return "\n".join(lines) + "\n"


async def check_tls_rpt(domain: str, resolver: Resolver) -> Finding:
    name = f"_smtp._tls.{domain}"
    found = [t for t in await texts(resolver, name) if t.startswith("v=TLSRPTv1")]
    if not found:
        return Finding("tls-rpt", Status.OK, "Not published (optional).", required=False)
    errors, uris = _tls_rpt_errors(found)
    if not errors:
        return Finding("tls-rpt", Status.OK, f"Reports go to {', '.join(uris)}.", required=False)
    good = [u for u in uris if _TLSRPT_URI.match(u)] or [f"mailto:postmaster@{domain}"]
    return Finding(
        "tls-rpt",
        Status.WRONG,
        f"{name}: " + "; ".join(errors) + ".",
        Record(name, "TXT", f"v=TLSRPTv1; rua={','.join(good)}"),
        required=False,
    )


def _tls_rpt_errors(found: list[str]) -> tuple[list[str], list[str]]:
    """RFC 8460 3: ``v=TLSRPTv1; rua=<mailto: or https: URIs, comma-separated>``."""
    if len(found) > 1:
        return [f"{len(found)} records; publish exactly one"], []
    fields: dict[str, str] = {}
    errors = []
    for part in found[0].split(";")[1:]:
        name, equals, value = part.partition("=")
        if not part.strip():
            continue
        if not equals:
            errors.append(f"'{part.strip()}' is not a field=value pair")
        else:
            fields[name.strip()] = value.strip()
    if found[0].split(";")[0].strip() != "v=TLSRPTv1":
        errors.append("it must start with 'v=TLSRPTv1;'")
    uris = [u.strip() for u in fields.get("rua", "").split(",") if u.strip()]
    if not uris:
        errors.append("'rua=' with a mailto: or https: address is missing")
    errors.extend(
        f"'{u}' is not a mailto: or https: address" for u in uris if not _TLSRPT_URI.match(u)
    )
    return errors, uris
