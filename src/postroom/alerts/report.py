"""The summary report (``[report]``): what the email log says of the last period, by
email, with the change from the period before.

``summary_text`` is sans-IO (two periods' ``AttemptTotals`` in, the text out);
``Reports.run`` is the supervised task that waits for the next report's time (on the
injected clock), reads the store and queues the email.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Protocol

from postroom.clock import Clock
from postroom.config.feedback import ReportSettings
from postroom.store.models import AttemptTotals

__all__ = ["Reports", "report_email", "summary_text"]

_log = logging.getLogger("postroom.alerts")
_COLUMNS = ("delivered", "bounced", "deferred")
_REASONS = 5


class TotalsStore(Protocol):
    async def attempt_totals(self, since: float, until: float, *, reasons: int) -> AttemptTotals:
        """See ``LogStore.attempt_totals``."""


def _by(totals: AttemptTotals, key: str) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(("sent", *_COLUMNS), 0))
    for row in totals.counts:
        counts = table[getattr(row, key)]
        counts["sent"] += row.count
        counts[row.disposition] = counts.get(row.disposition, 0) + row.count
    return table


def _change(now: int, before: int) -> str:
    if before == 0:
        return "new" if now else "-"
    return f"{(now - before) / before:+.0%}"


def _table(
    title: str, now: dict[str, dict[str, int]], before: dict[str, dict[str, int]]
) -> list[str]:
    lines = [
        title,
        f"  {'':30} {'sent':>8} {'delivered':>10} {'bounced':>8} {'deferred':>9} {'change':>7}",
    ]
    for name in sorted(now.keys() | before.keys(), key=lambda n: -now.get(n, {}).get("sent", 0)):
        counts = now.get(name, dict.fromkeys(("sent", *_COLUMNS), 0))
        previous = before.get(name, {}).get("sent", 0)
        lines.append(
            f"  {name[:30]:30} {counts['sent']:>8} {counts['delivered']:>10} "
            f"{counts['bounced']:>8} {counts['deferred']:>9} {_change(counts['sent'], previous):>7}"
        )
    return lines


def summary_text(
    current: AttemptTotals, previous: AttemptTotals, *, since: float, until: float, hostname: str
) -> str:
    start = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%d %H:%M")
    end = datetime.fromtimestamp(until, UTC).strftime("%Y-%m-%d %H:%M")
    sent_now = sum(r.count for r in current.counts)
    sent_before = sum(r.count for r in previous.counts)
    lines = [
        f"postroom on {hostname}: delivery from {start} to {end} UTC",
        f"{sent_now} attempts ({_change(sent_now, sent_before)} on the period before).",
        "",
        *_table("By mailer:", _by(current, "mailer"), _by(previous, "mailer")),
        "",
        *_table("By recipient domain:", _by(current, "domain"), _by(previous, "domain")),
        "",
        "Top failure reasons:",
    ]
    if not current.reasons:
        lines.append("  none")
    for reason in current.reasons:
        code = " ".join(str(c) for c in (reason.code, reason.enhanced) if c is not None)
        lines.append(f"  {reason.count:>6}  {code or '-'}  {reason.example[:100]}")
    return "\n".join(lines) + "\n"


def report_email(
    text: str, *, sender: str, to: Sequence[str], until: float, hostname: str
) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    day = datetime.fromtimestamp(until, UTC).strftime("%Y-%m-%d")
    message["Subject"] = f"[postroom {hostname}] Delivery report to {day}"
    message["Date"] = format_datetime(datetime.fromtimestamp(until, UTC))
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    return message.as_bytes()


class Reports:
    def __init__(
        self,
        settings: ReportSettings,
        store: TotalsStore,
        clock: Clock,
        *,
        hostname: str,
        send_email: Callable[[str, Sequence[str], bytes], Awaitable[None]],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._store = store
        self._clock = clock
        self._hostname = hostname
        self._send_email = send_email
        self._sleep = sleep

    async def run(self) -> None:
        """Every ``every`` seconds, on the period's boundary (so a restart does not move
        the schedule): the report of the period that just ended."""
        every = self._settings.every
        while True:
            now = self._clock.time()
            await self._sleep(every - now % every)
            await self.send(self._clock.time() // every * every)

    async def send(self, until: float) -> None:
        every = self._settings.every
        since = until - every
        current = await self._store.attempt_totals(since, until, reasons=_REASONS)
        previous = await self._store.attempt_totals(since - every, since, reasons=_REASONS)
        text = summary_text(current, previous, since=since, until=until, hostname=self._hostname)
        sender = self._settings.sender or f"postmaster@{self._hostname}"
        data = report_email(
            text, sender=sender, to=self._settings.to, until=until, hostname=self._hostname
        )
        try:
            await self._send_email(sender, self._settings.to, data)
        except OSError as exc:
            _log.warning("delivery report not queued: %s", exc)
