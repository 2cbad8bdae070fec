"""What the API needs from the rest of postroom, passed in by the composition root."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from postroom.clock import Clock
from postroom.config.eventhooks import WebhookTarget
from postroom.config.settings import ApiSettings
from postroom.delivery.webhooks.handle import HookedMailer
from postroom.events.metrics import Metrics, Sessions, WorkerCounts
from postroom.feedback import EngagementDesk
from postroom.intake import Intake
from postroom.readiness import Readiness
from postroom.store import Store

__all__ = ["ApiDeps", "max_request_size"]

_JSON_OVERHEAD = 1024 * 1024  # fields, names and escaping around the base64


def max_request_size(max_message_size: int) -> int:
    """A message of the largest size, base64-encoded (4/3), inside a JSON document."""
    return max_message_size * 4 // 3 + _JSON_OVERHEAD


@dataclass(frozen=True, slots=True)
class ApiDeps:
    store: Store
    intake: Intake
    clock: Clock
    settings: ApiSettings
    hostname: str
    max_message_size: int
    max_recipients: int
    queue_changed: Callable[[], None] | None = None  # wakes the scheduler after a retry
    # Mailers with a [mailers.webhook] table, by name: POST /hooks/{name} takes their events.
    hooked: Mapping[str, HookedMailer] = field(default_factory=dict)
    readiness: Readiness | None = None  # what /readyz reports; None: always ready
    delivery_paused: bool = False  # delivery.paused: /readyz says so
    engagement: EngagementDesk | None = None  # /t/...: opens, clicks, unsubscribes
    webhooks: Sequence[WebhookTarget] = ()  # [[webhooks]]: GET /api/v1/webhooks lists them
    metrics: Metrics | None = None  # /metrics; None: 404
    smtp_sessions: Sessions | None = None  # the SMTP connections open, for /metrics
    worker_counts: WorkerCounts | None = None  # the accept workers' counters, for /metrics
