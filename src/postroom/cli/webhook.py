"""``postroom webhook``: the configured ``[[webhooks]]``, a test request, the history."""

from __future__ import annotations

import asyncio
import os

import click

from postroom.cli import AppContext, config_option, fail, pass_app
from postroom.cli.render import emit_json, format_time, print_table, printable
from postroom.store.models import WebhookState

__all__ = ["webhook"]

_HISTORY_COLUMNS = (
    "Webhook", "Event", "Type", "Queue id", "Recipient", "State", "Tries", "Status", "Last try",
    "Error",
)  # fmt: skip


@click.group()
def webhook() -> None:
    """Outgoing webhooks: where postroom POSTs its events (docs/events.md)."""


@webhook.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@config_option
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """The configured webhooks and the events waiting for each."""
    targets = app.settings.webhooks
    backlog = app.run(lambda store: store.webhook_backlog())
    if as_json:
        emit_json(
            {
                "webhooks": [t.as_json(backlog.get(t.name, 0)) for t in targets],
                "not_fanned_out": backlog.get("", 0),
            }
        )
        return
    rows = (
        (
            t.name,
            str(t.url),
            ", ".join(e.value for e in t.events) or "(all)",
            ", ".join(t.tags) or "(any)",
            str(backlog.get(t.name, 0)),
        )
        for t in targets
    )
    print_table(("Name", "URL", "Events", "Tags", "Pending"), rows, empty="No webhooks configured.")


@webhook.command("test")
@click.argument("name")
@config_option
@pass_app
def test(app: AppContext, name: str) -> None:
    """POST a signed test event (type "queued", reason "test") to webhook NAME now and
    say what it answered. Exit code 1 unless it answered 2xx."""
    from postroom.clock import SystemClock
    from postroom.events.dispatcher import send_test_event

    settings = app.settings
    target = next((t for t in settings.webhooks if t.name == name), None)
    if target is None:
        known = ", ".join(t.name for t in settings.webhooks) or "none configured"
        fail(f"no webhook named {name!r} ({known})")
    result = asyncio.run(send_test_event(target, SystemClock(), environ=os.environ))
    if result.error is not None:
        fail(f"webhook {name}: {result.error}")
    click.echo(f"webhook {name}: {result.status} for test event {result.event.id}")


@webhook.command("history")
@click.argument("name", required=False)
@click.option("--failed", is_flag=True, help="Only the deliveries given up.")
@click.option("--pending", is_flag=True, help="Only the deliveries still being tried.")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@config_option
@pass_app
def history(
    app: AppContext, *, name: str | None, failed: bool, pending: bool, limit: int, as_json: bool
) -> None:
    """Recent deliveries of events to the webhooks (or to NAME), newest first."""
    state = WebhookState.FAILED if failed else WebhookState.PENDING if pending else None
    found = app.run(lambda store: store.webhook_deliveries(webhook=name, state=state, limit=limit))
    if as_json:
        emit_json([d.as_json() for d in found])
        return
    rows = (
        (
            d.webhook,
            d.event.id,
            d.event.type.value,
            d.event.queue_id or "-",
            d.event.recipient,
            d.state.value,
            str(d.attempts),
            str(d.last_status or "-"),
            format_time(d.last_attempt_at),
            printable(d.last_error),
        )
        for d in found
    )
    print_table(
        _HISTORY_COLUMNS,
        rows,
        empty="No webhook deliveries.",
    )
