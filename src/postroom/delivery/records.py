"""What an attempt leaves behind, the same whoever made it (the scheduler, or the
accepting process delivering local mail at once): the attempt rows for the store, and
the ``DeliveryAttempt`` events for the log line, metrics and alerts, published after
the rows are committed."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from postroom.delivery.outcome import Outcome
from postroom.delivery.router import Route
from postroom.events import Bus, DeliveryAttempt
from postroom.store.models import Attempt

__all__ = ["attempt_row", "log_routes", "publish_attempts"]


def log_routes(log: logging.Logger, message_id: str, routes: Mapping[Route, Sequence[str]]) -> None:
    """At debug level: the route each recipient of an attempt takes."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    for route, addresses in routes.items():
        log.debug(
            "%s: route %s (mailers %s) for %s",
            message_id,
            route.name,
            ", ".join(route.mailers),
            ", ".join(addresses),
        )


def attempt_row(message_id: str, at: float, outcome: Outcome) -> Attempt:
    remote = outcome.remote
    return Attempt(
        message_id=message_id,
        recipient=outcome.recipient,
        at=at,
        mailer=remote.mailer if remote else "",
        disposition=outcome.disposition.value,
        code=outcome.reply.code,
        enhanced=outcome.reply.enhanced,
        text=" ".join(outcome.reply.lines),
        host=remote.host if remote else None,
        ip=remote.ip if remote else None,
        port=remote.port if remote else None,
        tls=remote.tls if remote else None,
        provider_id=remote.provider_id if remote else None,
        duration=outcome.duration,
        route=outcome.routed.route if outcome.routed else None,
        route_reason=outcome.routed.reason if outcome.routed else None,
    )


def publish_attempts(
    bus: Bus,
    message_id: str,
    status: Mapping[str, str],
    attempts: Sequence[Attempt],
    dkim: str,
) -> None:
    """One ``DeliveryAttempt`` per attempt row; ``status``: each recipient's new state."""
    for row in attempts:
        bus.publish(
            DeliveryAttempt(
                queue_id=message_id,
                recipient=row.recipient,
                mailer=row.mailer,
                disposition=row.disposition,
                status=status.get(row.recipient, row.disposition),
                reply=" ".join(str(x) for x in (row.code, row.enhanced, row.text) if x),
                host=row.host,
                ip=row.ip,
                tls=row.tls,
                duration=row.duration,
                dkim=dkim,
            )
        )
