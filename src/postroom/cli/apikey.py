"""``postroom apikey``: keys for the HTTP API (shown once at creation, stored as a hash)."""

from __future__ import annotations

import click

from postroom.cli import AppContext, config_option, pass_app
from postroom.cli.render import emit_json, format_time, iso_time, print_table
from postroom.cli.senders import check_senders, sender_options
from postroom.directory.apikeys import DEFAULT_SCOPES, ApiKeys, check_key_name, parse_scopes
from postroom.intake.principals import api_key_rights
from postroom.store.models import ApiKeyRecord

__all__ = ["apikey"]


@click.group()
def apikey() -> None:
    """Keys for the HTTP API."""


@apikey.command("create")
@click.argument("name")
@sender_options("the local domains")
@click.option(
    "--scope",
    "scope_names",
    multiple=True,
    metavar="SCOPE",
    help=(
        "What the key may do: send, read (the mail it sent), read-all, queue (hold,"
        f" release, retry, delete). Repeatable or comma list; default {','.join(DEFAULT_SCOPES)}."
    ),
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@config_option
@pass_app
def create(
    app: AppContext,
    name: str,
    *,
    sender_domains: tuple[str, ...],
    any_sender: bool,
    scope_names: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create a key; it is shown this once (only its hash is kept). It may send as the
    local domains, and as each --sender-domain; --any-sender: as any domain."""
    check_key_name(name)
    check_senders(sender_domains, any_sender)
    scopes = parse_scopes(scope_names) if scope_names else DEFAULT_SCOPES
    new = app.run(
        lambda store: ApiKeys(store).create(name, sender_domains, scopes, any_sender=any_sender),
        create=True,
    )
    if as_json:
        emit_json({**_json(new.record), "key": new.token})
        return
    rights = api_key_rights(new.record).describe()
    click.echo(f"API key {name} created; may send as {rights}. It is shown only now; keep it safe:")
    click.echo(new.token)


@apikey.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@config_option
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """List the keys (names and limits; the keys themselves are not kept)."""
    records = app.run(lambda store: ApiKeys(store).list())
    if as_json:
        emit_json([_json(r) for r in records])
        return
    rows = (
        (
            r.name,
            api_key_rights(r).describe(),
            ",".join(r.scopes),
            format_time(r.created_at),
        )
        for r in records
    )
    print_table(("Name", "May send as", "Scopes", "Created"), rows, empty="No API keys.")


@apikey.command("senders")
@click.argument("name")
@sender_options("the local domains")
@config_option
@pass_app
def senders(app: AppContext, name: str, sender_domains: tuple[str, ...], any_sender: bool) -> None:
    """Set what a key may send as: the local domains and each --sender-domain (none: only
    the local domains), or --any-sender."""
    check_senders(sender_domains, any_sender)
    record = app.run(
        lambda store: ApiKeys(store).set_senders(name, sender_domains, any_sender=any_sender)
    )
    click.echo(f"API key {name} may send as {api_key_rights(record).describe()}")


@apikey.command("revoke")
@click.argument("name")
@config_option
@pass_app
def revoke(app: AppContext, name: str) -> None:
    """Revoke a key: requests with it are refused from now on."""
    app.run(lambda store: ApiKeys(store).revoke(name))
    click.echo(f"API key {name} revoked")


def _json(record: ApiKeyRecord) -> dict[str, object]:
    return {
        "name": record.name,
        "sender_domains": list(record.sender_domains),
        "scopes": list(record.scopes),
        "any_sender": record.any_sender,
        "may_send_as": api_key_rights(record).describe(),
        "created_at": iso_time(record.created_at),
    }
