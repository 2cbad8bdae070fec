"""``postroom mailer``: try one mailer by hand, and see how each is doing.

``mailer test NAME --to ADDR`` sends a small message built here through exactly that
mailer (no route, no queue) and prints what came back: for a provider API the raw
answer (status, the headers that matter, the body) and how postroom classifies it.
``mailer status`` reads the email log in the store, since the server that sends runs
in another process: each mailer's last success, last error, and messages delivered
today against its ``limits.per_day``.
"""

from __future__ import annotations

import asyncio
import random
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import click

from postroom.cli import AppContext, config_option, fail, pass_app
from postroom.cli.mailer_oauth import authorize
from postroom.cli.mailerhealth import (
    COLUMNS,
    mailer_rows,
    mailer_states,
    mailers_json,
    read_usage,
)
from postroom.cli.render import emit_json, print_fields, print_table, printable, status_text
from postroom.clock import SystemClock
from postroom.config.providers import ProviderMailerSettings
from postroom.config.settings import Settings
from postroom.delivery.mailers import Mailer
from postroom.delivery.mailers.api.http import HttpMailer, NoAnswer, classify
from postroom.delivery.mailers.build import AnyMailerSettings, MailerDeps, build_mailer
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Disposition, Outcome
from postroom.errors import AddressError
from postroom.mail.address import parse_address
from postroom.resolver import DnsResolver

__all__ = ["mailer"]

# Answer headers worth showing: ids, rate limits, the provider's error type.
_SHOWN_PREFIXES = ("x-message-id", "retry-after", "x-ratelimit", "ratelimit", "x-sib-ratelimit",
                   "x-amzn-", "x-request-id", "request-id", "content-type")  # fmt: skip
_BODY_SHOWN = 4000  # characters


@click.group()
def mailer() -> None:
    """Mailers: send a test message through one, see their health."""


mailer.add_command(authorize)


@mailer.command("test")
@click.argument("name")
@click.option("--to", "recipient", required=True, metavar="ADDRESS", help="Who gets it.")
@click.option("--from", "sender", metavar="ADDRESS", help="Sender (default: postroom@HOSTNAME).")
@config_option
@pass_app
def test(app: AppContext, name: str, recipient: str, sender: str | None) -> None:
    """Send a test message through mailer NAME and show the answer."""
    settings = app.settings
    config = _mailer_settings(settings, name)
    for address in (recipient, sender):
        try:
            parse_address(address) if address else None
        except AddressError as exc:
            fail(f"{address!r} is not an address: {exc}")
    message = _test_message(settings, name, sender or f"postroom@{settings.hostname}", recipient)
    outcomes = asyncio.run(_send(settings, config, message, recipient))
    delivered = bool(outcomes) and all(o.disposition is Disposition.DELIVERED for o in outcomes)
    raise click.exceptions.Exit(0 if delivered else 1)


@mailer.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@config_option
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Each mailer's last success, last error and messages delivered today and this hour."""
    settings = app.settings
    usage = app.run(lambda store: read_usage(store, time.time()))
    states = mailer_states(settings, usage)
    if as_json:
        emit_json(mailers_json(states))
        return
    print_table(COLUMNS, mailer_rows(states), empty="No mailers.")


def _mailer_settings(settings: Settings, name: str) -> AnyMailerSettings:
    for config in settings.mailers:
        if config.name == name:
            return config
    known = ", ".join(m.name for m in settings.mailers)
    fail(f"no mailer named {name!r} (there are {known})")


def _test_message(settings: Settings, name: str, sender: str, recipient: str) -> OutboundMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = recipient
    mail["Subject"] = f"postroom test through mailer {name}"
    mail["Date"] = formatdate(usegmt=True)
    mail["Message-ID"] = make_msgid("postroom-test", domain=settings.hostname)
    mail.set_content(f"This message tests the mailer {name} of {settings.hostname}.\n")
    data = mail.as_bytes(policy=mail.policy.clone(linesep="\r\n"))
    return OutboundMessage(id="mailer-test", sender=sender, data=data, received_at=time.time())


async def _send(
    settings: Settings, config: AnyMailerSettings, message: OutboundMessage, recipient: str
) -> list[Outcome]:
    rng = random.Random()
    deps = MailerDeps(
        resolver=DnsResolver(settings.dns, rng=rng),
        hostname=settings.hostname,
        clock=SystemClock(),
        rng=rng,
        data_dir=settings.data_dir,
    )
    built: Mailer = build_mailer(config, deps)
    recipients = [OutboundRecipient(recipient)]
    try:
        if isinstance(built, HttpMailer):
            return await _exchange(built, message, recipients)
        outcomes = await built.deliver(message, recipients)
    finally:
        await built.aclose()
    _print_outcomes(outcomes)
    return outcomes


async def _exchange(
    mailer: HttpMailer[ProviderMailerSettings],
    message: OutboundMessage,
    recipients: list[OutboundRecipient],
) -> list[Outcome]:
    started = time.monotonic()
    answer, lost = await mailer.exchange(message, recipients)
    duration = time.monotonic() - started
    where = f"{mailer.name} ({mailer.settings.base_url})"
    fields: list[tuple[str, str | None]] = [("Mailer", where)]
    if isinstance(answer, NoAnswer):
        fields.append(("Answer", f"none: {answer.text}"))
        fields.append(("Classified", f"temporary ({answer.enhanced}): deferred, failover"))
        print_fields(fields)
        return []
    rule = classify(mailer.TABLE, answer.status, mailer.read(answer).code)
    shown = [(n, v) for n, v in answer.headers.items() if n.lower().startswith(_SHOWN_PREFIXES)]
    fields += [
        ("Answer", f"HTTP {answer.status}"),
        *shown,
        ("Body", printable(answer.text[:_BODY_SHOWN]) or None),
        ("Classified", f"{rule.verdict.value} ({rule.enhanced})"),
    ]
    if lost:
        fields.append(("Not carried", "; ".join(lost)))
    print_fields(fields)
    outcomes = mailer.outcomes(answer, recipients, duration, lost)
    _print_outcomes(outcomes)
    return outcomes


def _print_outcomes(outcomes: list[Outcome]) -> None:
    click.echo()
    rows = [
        (o.recipient, status_text(o.disposition.value), str(o.reply), "yes" if o.failover else "no")
        for o in outcomes
    ]
    print_table(("Recipient", "Outcome", "Reply", "Failover"), rows, empty="No outcome.")
