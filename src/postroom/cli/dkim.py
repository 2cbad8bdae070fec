"""``postroom dkim``: DKIM keys for the domains we send from, and the records to publish.

Keys live in ``<data_dir>/dkim``; the running server reads them for each message, so a
new or activated key takes effect without a restart.
"""

from __future__ import annotations

import click

from postroom.cli import AppContext, config_option, pass_app
from postroom.cli.render import emit_json, print_table
from postroom.clock import SystemClock
from postroom.mailauth.dkim import Algorithm, DkimKey, DkimKeyError, KeyRing, zone_line

__all__ = ["dkim"]

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _as_dict(key: DkimKey) -> dict[str, object]:
    return {
        "domain": key.domain,
        "selector": key.selector,
        "algorithm": key.algorithm,
        "active": key.active,
        "name": key.record_name,
        "value": key.record(),
        "path": str(key.path),
    }


def _keyring(app: AppContext) -> KeyRing:
    return KeyRing(app.settings.data_dir)


@click.group()
def dkim() -> None:
    """DKIM signing keys and the DNS records to publish for them."""


@dkim.command("keygen")
@click.argument("domain")
@click.option("--selector", help="The selector (default: s<YYYYMM> for RSA, e<YYYYMM> Ed25519).")
@click.option(
    "--algorithm", type=click.Choice(["rsa", "ed25519"]), default="rsa", show_default=True
)
@click.option("--bits", type=int, default=2048, show_default=True, help="RSA key size.")
@config_option
@pass_app
def keygen(
    app: AppContext, domain: str, selector: str | None, algorithm: Algorithm, bits: int
) -> None:
    """Create a key for DOMAIN and print the TXT record to publish."""
    keys = _keyring(app)
    chosen = selector or keys.next_selector(domain, algorithm, SystemClock().time())
    key = keys.generate(domain, chosen, algorithm, bits)
    click.echo(f"# {key.algorithm} key {key.selector} for {key.domain}, in {key.path}")
    if not key.active:
        click.echo(
            f"# not signing yet: publish the record, then "
            f"`postroom dkim activate {key.domain} {key.selector}`"
        )
    click.echo(zone_line(key))


@dkim.command("list")
@json_option
@config_option
@pass_app
def list_keys(app: AppContext, as_json: bool) -> None:
    """Every key, by domain."""
    keys = _keyring(app)
    found = [key for domain in keys.domains() for key in keys.keys(domain)]
    if as_json:
        emit_json([_as_dict(k) for k in found])
        return
    rows = [
        (k.domain, k.selector, k.algorithm, "yes" if k.active else "", k.record_name) for k in found
    ]
    print_table(
        ("DOMAIN", "SELECTOR", "ALGORITHM", "SIGNING", "RECORD NAME"), rows, empty="no DKIM keys"
    )


@dkim.command("show")
@click.argument("domain")
@json_option
@config_option
@pass_app
def show(app: AppContext, domain: str, as_json: bool) -> None:
    """The TXT records to publish for DOMAIN's keys."""
    found = _keyring(app).keys(domain)
    if not found:
        raise DkimKeyError(f"no DKIM keys for {domain}")
    if as_json:
        emit_json([_as_dict(k) for k in found])
        return
    for key in found:
        state = "signing" if key.active else "not signing"
        click.echo(f"# {key.algorithm} {key.selector} ({state})")
        click.echo(zone_line(key))


@dkim.command("rotate")
@click.argument("domain")
@click.option(
    "--algorithm",
    type=click.Choice(["rsa", "ed25519"]),
    help="Rotate only this algorithm's key (default: each algorithm that signs now).",
)
@click.option("--bits", type=int, default=2048, show_default=True, help="RSA key size.")
@config_option
@pass_app
def rotate(app: AppContext, domain: str, algorithm: Algorithm | None, bits: int) -> None:
    """Create the next key for DOMAIN; the current one signs until `activate`."""
    for key in _keyring(app).rotate(domain, SystemClock().time(), algorithm, bits):
        click.echo(f"# new {key.algorithm} key {key.selector} for {key.domain}")
        click.echo(zone_line(key))
        if not key.active:
            click.echo(
                f"# once the record is visible in DNS: "
                f"postroom dkim activate {key.domain} {key.selector}"
            )


@dkim.command("activate")
@click.argument("domain")
@click.argument("selector")
@config_option
@pass_app
def activate(app: AppContext, domain: str, selector: str) -> None:
    """Sign with SELECTOR's key from now on (in place of its algorithm's current key)."""
    key = _keyring(app).activate(domain, selector)
    click.echo(f"{key.domain}: {key.algorithm} signing with selector {key.selector}")
