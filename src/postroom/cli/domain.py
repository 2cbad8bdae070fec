"""``postroom domain``: the local domains, whose mail this server accepts, and ``check``:
whether a domain's DNS is set up for sending from this server."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import TYPE_CHECKING

import click
from rich.text import Text

from postroom.cli import AppContext, config_option, pass_app
from postroom.cli.render import emit_json, print_table, printable
from postroom.directory import Domains, unicode_domain

if TYPE_CHECKING:
    from postroom.mailauth.doctor import Report

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
    added = app.run(lambda store: Domains(store).add(name), create=True)
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


@domain.command("check")
@click.argument("name")
@click.option("--selector", help="Check this DKIM selector (default: the active keys).")
@click.option(
    "--ip",
    "ips",
    multiple=True,
    help="This server's public sending address (repeatable; default:"
    " delivery.sending_addresses, else the system's outbound address).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@config_option
@pass_app
def check(
    app: AppContext, name: str, selector: str | None, ips: tuple[str, ...], as_json: bool
) -> None:
    """Check MX, SPF, DKIM, DMARC, PTR, MTA-STS and TLS-RPT of a domain; print the records
    to publish. Exit code 0 only when every required check is ok."""
    from postroom.clock import SystemClock
    from postroom.mail.address import parse_domain, to_ascii_domain
    from postroom.mailauth.doctor import DomainCheck, check_domain

    domain = to_ascii_domain(parse_domain(name.strip()))
    given = [_ip(text) for text in ips]
    setup = DomainCheck.for_settings(app.settings, SystemClock().time(), given)
    report = asyncio.run(check_domain(domain, setup, selector))
    if as_json:
        emit_json(report.to_json())
    else:
        _print_report(report)
    if not report.passes:
        raise click.exceptions.Exit(1)


_STATUS_STYLES = {"ok": "green", "warning": "yellow", "missing": "red", "wrong": "red"}


def _print_report(report: Report) -> None:
    rows = []
    for finding in report.findings:
        fix = finding.fix
        rows.append(
            (
                finding.check,
                Text(str(finding.status), style=_STATUS_STYLES[finding.status]),
                finding.explanation,
                _fix_text(fix.name, fix.type, fix.value) if fix else None,
            )
        )
    print_table(("Check", "Status", "Finding", "Publish"), rows, empty="Nothing checked.")
    verdict = "all required checks ok" if report.passes else "not ready: publish the records above"
    click.echo(
        f"{report.domain} from {', '.join(report.addresses)} as {report.hostname}: {verdict}"
    )


def _fix_text(name: str, kind: str, value: str) -> Text:
    # The MTA-STS policy file has several lines; each is shown, none is interpreted.
    lines = [printable(line) for line in value.rstrip("\n").split("\n")]
    return Text(f"{printable(name)} {kind} " + "\n".join(lines))


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an IP address", param_hint="--ip") from None


def _both(name: str) -> str:
    readable = unicode_domain(name)
    return name if readable == name else f"{readable} ({name})"
