"""``postroom suppression``: the addresses postroom does not send to."""

from __future__ import annotations

import getpass

import click

from postroom.cli import AppContext, config_option, pass_app
from postroom.cli.render import emit_json, format_time, print_table, printable
from postroom.directory.suppressions import Suppressions
from postroom.store.models import SuppressionReason

__all__ = ["suppression"]

_SCOPE = click.option(
    "--scope",
    metavar="DOMAIN",
    help="Only for senders of this domain (default: every sender).",
)


@click.group()
def suppression() -> None:
    """The suppression list: mail to these addresses is recorded rejected, never sent."""


@suppression.command("list")
@click.option("--scope", metavar="DOMAIN", help="Only this sender domain's entries.")
@click.option("--global", "global_", is_flag=True, help="Only the entries for every sender.")
@click.option("--address", help="Only this address's entries.")
@click.option("--limit", type=click.IntRange(1, 10000), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@config_option
@pass_app
def list_(
    app: AppContext,
    *,
    scope: str | None,
    global_: bool,
    address: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List suppressed addresses."""
    where = "" if global_ else scope
    entries = app.run(
        lambda store: Suppressions(store).list(scope=where, address=address, limit=limit)
    )
    if as_json:
        emit_json([e.as_json() for e in entries])
        return
    rows = (
        (
            e.address,
            e.scope or "(global)",
            e.reason.value,
            printable(e.source),
            format_time(e.created_at),
            printable(e.detail),
        )
        for e in entries
    )
    print_table(
        ("Address", "Scope", "Reason", "Source", "Since", "Detail"),
        rows,
        empty="No suppressed addresses.",
    )


@suppression.command("add")
@click.argument("address")
@_SCOPE
@click.option(
    "--reason",
    type=click.Choice([r.value for r in SuppressionReason]),
    default=SuppressionReason.MANUAL.value,
    show_default=True,
)
@click.option("--note", default="", help="Why, for whoever reads the list later.")
@config_option
@pass_app
def add(app: AppContext, address: str, scope: str | None, reason: str, note: str) -> None:
    """Suppress ADDRESS (globally, or for the senders of --scope)."""
    source = f"cli {getpass.getuser()}"
    entry, added = app.run(
        lambda store: Suppressions(store).add(
            address, scope=scope, reason=SuppressionReason(reason), source=source, detail=note
        )
    )
    place = f"for {entry.scope}" if entry.scope else "globally"
    click.echo(f"{entry.address} {'suppressed' if added else 'was suppressed already'} {place}")


@suppression.command("remove")
@click.argument("address")
@_SCOPE
@config_option
@pass_app
def remove(app: AppContext, address: str, scope: str | None) -> None:
    """Take ADDRESS off the list (the global entry, or --scope's)."""
    entry = app.run(lambda store: Suppressions(store).remove(address, scope=scope))
    place = f"for {entry.scope}" if entry.scope else "globally"
    click.echo(f"{entry.address} is no longer suppressed {place}")
