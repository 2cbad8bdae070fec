"""The periodic DNS check behind the ``dns`` alert: every ``DNS_CHECK_EVERY`` seconds each
sending domain (the local domains and those with DKIM keys) gets ``postroom domain
check``'s required checks (MX, SPF, DKIM, DMARC, PTR); those missing or wrong go to ``Alerts``,
which alerts when a domain turns bad, once, and again only after it was good."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from postroom.alerts.service import Alerts, DnsVerdict
from postroom.errors import PostroomError
from postroom.mailauth.doctor import DomainCheck, Status, check_domain

__all__ = ["DNS_CHECK_EVERY", "DnsWatch"]

DNS_CHECK_EVERY = 6 * 3600.0
# Bad is missing or wrong; a warning (a weak key, a soft policy) works and is not an alert.
_BAD = frozenset({Status.MISSING, Status.WRONG})
_log = logging.getLogger("postroom.alerts")


class DnsWatch:
    def __init__(
        self,
        alerts: Alerts,
        *,
        domains: Callable[[], Awaitable[list[str]]],
        check: Callable[[], DomainCheck],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._alerts = alerts
        self._domains = domains
        self._check = check
        self._sleep = sleep

    async def run(self) -> None:
        while True:
            await self.check_all()
            await self._sleep(DNS_CHECK_EVERY)

    async def check_all(self) -> None:
        for domain in await self._domains():
            self._alerts.on_dns(DnsVerdict(domain, await self._problems(domain)))

    async def _problems(self, domain: str) -> tuple[str, ...]:
        try:
            report = await check_domain(domain, self._check())
        except PostroomError as exc:  # no such domain, DNS not answering
            return (str(exc),)
        return tuple(
            f"{f.check}: {f.status.value}: {f.explanation}"
            for f in report.findings
            if f.required and f.status in _BAD
        )
