"""``postroom domain``: the local domains, whose mail this server accepts."""

from __future__ import annotations

import click

from postroom.cli import AppContext, config_option, pass_app
from postroom.cli.render import emit_json, print_table
from postroom.directory import Domains, unicode_domain

__all__ = ["domain"]


@click.group()
def domain() -> None:
    """Local domains: mail for them is accepted and kept here."""


@domain.command("add")
@click.argument("name")
@config_option
@pass_app
def add(app: AppContext, name: str) -> None:
    """Make a domain local (IDNs in either form)."""
    added = app.run(lambda store: Domains(store).add(name))
    click.echo(f"domain {_both(added)} added")


@domain.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@config_option
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """List the local domains."""
    names = app.run(lambda store: Domains(store).list())
    if as_json:
        emit_json([{"name": name, "unicode": unicode_domain(name)} for name in names])
        return
    rows = ((unicode_domain(name), name) for name in names)
    print_table(("Domain", "A-label"), rows, empty="No local domains.")


@domain.command("remove")
@click.argument("name")
@config_option
@pass_app
def remove(app: AppContext, name: str) -> None:
    """Stop treating a domain as local (its users stay)."""
    removed = app.run(lambda store: Domains(store).remove(name))
    click.echo(f"domain {_both(removed)} removed")


def _both(name: str) -> str:
    readable = unicode_domain(name)
    return name if readable == name else f"{readable} ({name})"
