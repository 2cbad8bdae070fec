"""What is worth an alert, and how often (sans-IO: facts and times in, alerts out).

``Watch.attempt`` takes each delivery attempt as it is published and returns the alerts
it raises: a message bounced or expired, a mailer whose every attempt has failed for
``failing_for`` seconds, the share of bounces over ``window`` passing ``bounce_rate``.
``Watch.dns`` takes a domain check's verdict. ``Limiter`` then decides which alerts go
out: one per (kind, subject) per ``quiet`` seconds, and at most ``burst`` an hour in
all; those held back are counted and named in the next alert that goes, so an outage
that fails ten thousand messages gives a handful of alerts, each saying how many more.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

from postroom.config.feedback import AlertKind, AlertSettings

__all__ = ["Alert", "Limiter", "Watch"]


@dataclass(frozen=True, slots=True)
class Alert:
    kind: AlertKind
    subject: str  # what it is about: a mailer's name, a domain, a queue id
    title: str  # one line
    text: str  # a few lines for people
    at: float
    held_back: int = 0  # alerts of this kind and subject not sent since the last one


@dataclass(slots=True)
class _Failing:
    since: float
    alerted: bool = False


class Watch:
    def __init__(self, settings: AlertSettings) -> None:
        self._settings = settings
        self._failing: dict[str, _Failing] = {}
        self._outcomes: deque[tuple[float, bool]] = deque()  # (at, bounced) over the window
        self._rate_alerted = False
        self._dns_bad: set[str] = set()

    def attempt(
        self,
        *,
        at: float,
        queue_id: str,
        recipient: str,
        mailer: str,
        disposition: str,
        status: str,
        reply: str,
    ) -> list[Alert]:
        """One attempt's outcome (``DeliveryAttempt``'s fields); the alerts it raises."""
        alerts: list[Alert] = []
        if status == "bounced":
            alerts.append(
                Alert(
                    AlertKind.BOUNCED,
                    mailer,
                    f"Bounced: {recipient}",
                    f"Message {queue_id} to {recipient} bounced via {mailer}: {reply}",
                    at,
                )
            )
        elif status == "expired":
            alerts.append(
                Alert(
                    AlertKind.EXPIRED,
                    mailer,
                    f"Expired: {recipient}",
                    f"Message {queue_id} to {recipient} expired in the queue; "
                    f"the last reply via {mailer} was: {reply}",
                    at,
                )
            )
        alerts.extend(self._mailer(at, mailer, disposition, reply))
        alerts.extend(self._rate(at, disposition))
        return [a for a in alerts if a.kind in self._settings.on]

    def _mailer(self, at: float, mailer: str, disposition: str, reply: str) -> list[Alert]:
        if disposition == "delivered":
            self._failing.pop(mailer, None)  # one success ends the outage
            return []
        failing = self._failing.setdefault(mailer, _Failing(at))
        if failing.alerted or at - failing.since < self._settings.failing_for:
            return []
        failing.alerted = True
        minutes = round((at - failing.since) / 60)
        return [
            Alert(
                AlertKind.MAILER_FAILING,
                mailer,
                f"Mailer {mailer} is failing",
                f"Every attempt through {mailer} has failed for {minutes} min. Last reply: {reply}",
                at,
            )
        ]

    def _rate(self, at: float, disposition: str) -> list[Alert]:
        settings = self._settings
        self._outcomes.append((at, disposition == "bounced"))
        while self._outcomes and self._outcomes[0][0] < at - settings.window:
            self._outcomes.popleft()
        total = len(self._outcomes)
        if total < settings.min_messages:
            return []
        bounced = sum(1 for _, b in self._outcomes if b)
        rate = bounced / total
        if rate < settings.bounce_rate:
            self._rate_alerted = False  # back under: the next rise alerts again
            return []
        if self._rate_alerted:
            return []
        self._rate_alerted = True
        return [
            Alert(
                AlertKind.BOUNCE_RATE,
                "all",
                f"Bounce rate {rate:.0%}",
                f"{bounced} of the last {total} attempts bounced (threshold "
                f"{settings.bounce_rate:.0%} over {settings.window / 60:.0f} min).",
                at,
            )
        ]

    def dns(self, at: float, domain: str, problems: list[str]) -> list[Alert]:
        """A domain check's problems (empty: all good); an alert when it turns bad."""
        if not problems:
            self._dns_bad.discard(domain)
            return []
        if domain in self._dns_bad or AlertKind.DNS not in self._settings.on:
            return []
        self._dns_bad.add(domain)
        return [
            Alert(AlertKind.DNS, domain, f"DNS check failing for {domain}", "\n".join(problems), at)
        ]


class Limiter:
    """Which alerts go out (see the module's docstring)."""

    HOUR = 3600.0

    def __init__(self, settings: AlertSettings) -> None:
        self._quiet = settings.quiet
        self._burst = settings.burst
        self._last: dict[tuple[AlertKind, str], float] = {}
        self._held: dict[tuple[AlertKind, str], int] = {}
        self._sent: deque[float] = deque()

    def admit(self, alert: Alert) -> Alert | None:
        key = (alert.kind, alert.subject)
        now = alert.at
        while self._sent and self._sent[0] <= now - self.HOUR:
            self._sent.popleft()
        last = self._last.get(key)
        if (last is not None and now - last < self._quiet) or len(self._sent) >= self._burst:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        self._sent.append(now)
        return replace(alert, held_back=self._held.pop(key, 0))
