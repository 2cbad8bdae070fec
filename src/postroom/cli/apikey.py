"""``postroom apikey``: keys for the HTTP API (shown once at creation, stored as a hash)."""

from __future__ import annotations

import click

from postroom.cli import AppContext, config_option, pass_app
from postroom.cli.render import emit_json, format_time, iso_time, print_table
from postroom.directory import normalize_domain
from postroom.directory.apikeys import DEFAULT_SCOPES, ApiKeys, check_key_name, parse_scopes
from postroom.store.models import ApiKeyRecord

__all__ = ["apikey"]


@click.group()
def apikey() -> None:
    """Keys for the HTTP API."""


@apikey.command("create")
@click.argument("name")
@click.option(
    "--sender-domain",
    "sender_domains",
    multiple=True,
    metavar="DOMAIN",
    help="A domain the key may send as (repeatable; none: any domain).",
)
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
    sender_domains: tuple[str, ...],
    scope_names: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create a key; it is shown this once (only its hash is kept)."""
    check_key_name(name)
    for domain in sender_domains:
        normalize_domain(domain)
    scopes = parse_scopes(scope_names) if scope_names else DEFAULT_SCOPES
    new = app.run(lambda store: ApiKeys(store).create(name, sender_domains, scopes))
    if as_json:
        emit_json({**_json(new.record), "key": new.token})
        return
    click.echo(f"API key {name} created. It is shown only now; keep it safe:")
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
            ", ".join(r.sender_domains) or "any domain",
            ",".join(r.scopes),
            format_time(r.created_at),
        )
        for r in records
    )
    print_table(("Name", "May send as", "Scopes", "Created"), rows, empty="No API keys.")


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
        "created_at": iso_time(record.created_at),
    }
