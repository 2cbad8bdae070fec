"""Each configured mailer's health as the email log saw it, for ``postroom mailer status``
and ``postroom status``: the last success, the last error, and the messages delivered
today and this hour (UTC) against the mailer's limits, as table cells or JSON."""

from __future__ import annotations

from dataclasses import dataclass

from postroom.cli.mailer_oauth import oauth_status
from postroom.cli.render import Cell, format_time, iso_time, printable
from postroom.config.settings import Settings
from postroom.store import LogStore
from postroom.store.models import MailerHealth

__all__ = [
    "COLUMNS",
    "MailerState",
    "MailerUsage",
    "mailer_rows",
    "mailer_states",
    "mailers_json",
    "read_usage",
]

COLUMNS = ("Mailer", "Type", "Last success", "Last error", "Today", "This hour", "Token")


@dataclass(frozen=True, slots=True)
class MailerUsage:
    """Per mailer name: its health with the deliveries since midnight UTC, and since the
    hour began."""

    day: dict[str, MailerHealth]
    hour: dict[str, MailerHealth]


async def read_usage(store: LogStore, now: float) -> MailerUsage:
    day = await store.mailer_health(now - now % 86400)
    hour = await store.mailer_health(now - now % 3600)
    return MailerUsage({h.mailer: h for h in day}, {h.mailer: h for h in hour})


@dataclass(frozen=True, slots=True)
class MailerState:
    """One configured mailer: what the log saw today, this hour's count, its limits."""

    name: str
    type: str
    today: MailerHealth | None
    this_hour: int
    per_day: int | None
    per_hour: int | None
    token: str | None  # an OAuth mailer's token state

    @property
    def delivered_today(self) -> int:
        return self.today.sent_since if self.today is not None else 0


def mailer_states(settings: Settings, usage: MailerUsage) -> list[MailerState]:
    """Every configured mailer, in configuration order."""
    states = []
    for config in settings.mailers:
        limits = getattr(config, "limits", None)
        hour = usage.hour.get(config.name)
        states.append(
            MailerState(
                name=config.name,
                type=config.type,
                today=usage.day.get(config.name),
                this_hour=hour.sent_since if hour is not None else 0,
                per_day=getattr(limits, "per_day", None),
                per_hour=getattr(limits, "per_hour", None),
                token=oauth_status(settings, config.name),
            )
        )
    return states


def mailer_rows(states: list[MailerState]) -> list[tuple[Cell, ...]]:
    return [
        (
            m.name,
            m.type,
            format_time(m.today.last_success_at) if m.today else "-",
            _error(m.today) if m.today else "-",
            _count(m.delivered_today, m.per_day),
            _count(m.this_hour, m.per_hour),
            m.token,
        )
        for m in states
    ]


def mailers_json(states: list[MailerState]) -> list[dict[str, object]]:
    """The documented shape of ``mailer status --json`` and ``status --json``'s
    ``mailers``."""
    return [
        {
            "name": m.name,
            "type": m.type,
            "last_success_at": iso_time(m.today.last_success_at) if m.today else None,
            "last_success": m.today.last_success if m.today else None,
            "last_error_at": iso_time(m.today.last_error_at) if m.today else None,
            "last_error": m.today.last_error if m.today else None,
            "delivered_today": m.delivered_today,
            "delivered_this_hour": m.this_hour,
            "per_day": m.per_day,
            "per_hour": m.per_hour,
            "token": m.token,
        }
        for m in states
    ]


def _count(sent: int, cap: int | None) -> str:
    return f"{sent}/{cap}" if cap else str(sent)


def _error(seen: MailerHealth) -> str | None:
    if seen.last_error_at is None:
        return None
    return f"{format_time(seen.last_error_at)}: {printable(seen.last_error or '')}"
