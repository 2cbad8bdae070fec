"""What ``domain check`` says: one ``Finding`` per check, each with a status, the reason in
plain words and, when not ok, the record to publish to fix it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from postroom.resolver import Resolver

__all__ = ["Finding", "Record", "Report", "Status", "texts", "worst"]


class Status(StrEnum):
    OK = "ok"
    WARNING = "warning"  # works, but weaker than it should be
    MISSING = "missing"  # nothing published
    WRONG = "wrong"  # published, but broken or contradicting this server


_RANK = {Status.OK: 0, Status.WARNING: 1, Status.MISSING: 2, Status.WRONG: 3}


def worst(statuses: Iterable[Status]) -> Status:
    return max(statuses, key=_RANK.__getitem__, default=Status.OK)


@dataclass(frozen=True, slots=True)
class Record:
    """A record to publish: ``type`` is a DNS type, or ``file`` for the MTA-STS policy,
    whose ``name`` is then its URL."""

    name: str
    type: str
    value: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "value": self.value}


@dataclass(frozen=True, slots=True)
class Finding:
    check: str  # "mx", "spf", "dkim", "dmarc", "ptr", "mta-sts", "tls-rpt", "address"
    status: Status
    explanation: str
    fix: Record | None = None
    # Optional checks (MTA-STS, TLS-RPT) fail the run only when published and broken.
    required: bool = True

    @property
    def passes(self) -> bool:
        if self.status is Status.OK:
            return True
        return not self.required and self.status is Status.WARNING

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "status": str(self.status),
            "required": self.required,
            "explanation": self.explanation,
            "fix": self.fix.to_json() if self.fix else None,
        }


@dataclass(frozen=True, slots=True)
class Report:
    domain: str
    hostname: str  # the HELO name
    addresses: tuple[str, ...]  # this server's sending addresses, as checked
    findings: tuple[Finding, ...]

    @property
    def passes(self) -> bool:
        """Every required check ok, and no optional one published and broken."""
        return all(finding.passes for finding in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "hostname": self.hostname,
            "addresses": list(self.addresses),
            "ok": self.passes,
            "findings": [finding.to_json() for finding in self.findings],
        }


async def texts(resolver: Resolver, name: str) -> list[str]:
    """The name's TXT records as text (bytes that are not UTF-8 shown as U+FFFD)."""
    return [record.decode("utf-8", "replace") for record in await resolver.txt(name)]
