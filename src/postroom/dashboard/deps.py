"""What the dashboard needs from the rest of postroom, passed in by the composition root."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from postroom.clock import Clock
from postroom.config.settings import Settings
from postroom.delivery.mailers.api.limits import WindowUsage
from postroom.intake import Intake
from postroom.net.throttle import FailureThrottle
from postroom.store import Store

__all__ = ["DashboardDeps"]


async def _no_usage() -> Mapping[str, Sequence[WindowUsage]]:
    return {}


@dataclass(frozen=True, slots=True)
class DashboardDeps:
    store: Store
    intake: Intake
    clock: Clock
    settings: Settings
    key: bytes  # signs sessions and CSRF tokens (dashboard.key in the data directory)
    throttle: FailureThrottle  # the AUTH throttle: failed logins count with SMTP AUTH's
    queue_changed: Callable[[], None] | None = None  # wakes the scheduler after a retry
    # Each API mailer's sending-limit windows now (counted in the store, for every node).
    limit_usage: Callable[[], Awaitable[Mapping[str, Sequence[WindowUsage]]]] = _no_usage
    # Where the webhooks' secret_env names are read (a test request to a webhook).
    environ: Mapping[str, str] = field(default_factory=dict)
