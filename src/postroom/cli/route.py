"""``postroom route``: which mailers a message would take, and why."""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from email import policy
from email.header import Header
from email.parser import BytesHeaderParser
from typing import IO, Any

import click

from postroom.cli import AppContext, config_option, pass_app
from postroom.cli.render import emit_json, print_fields, print_table, printable
from postroom.delivery.mailers.build import AnyMailerSettings as AnyMailer
from postroom.delivery.message import OutboundMessage
from postroom.delivery.router import Explanation, RouteTable
from postroom.delivery.rules import ConditionResult, GroupResult, MessageView
from postroom.mail.address import parse_address

__all__ = ["route"]


_COMBINE: Mapping[str, Callable[[Iterable[object]], bool]] = {"all_of": all, "any_of": any}
# Header lines up to the empty line, in CRLF or bare-LF files.
_HEADER_BLOCK = re.compile(rb"(?:[^\r\n][^\n]*\n)*")
_SUBJECT_LINES = re.compile(rb"(?im)^subject:.*(?:\r?\n[ \t].*)*(?:\r?\n|$)")

# What each mailer type delivers to, for the chain.
_TARGETS: Mapping[str, Callable[[Any], str]] = {
    "mx": lambda m: f"the recipient domain's MX hosts, port {m.port}",
    "smtp": lambda m: f"{m.host}:{m.port} ({m.tls.value})",
    "local": lambda m: "mailboxes in the data directory",
    "capture": lambda m: "nowhere: kept in the store, shown in the dashboard",
}


@click.group()
def route() -> None:
    """Routes: which mailers carry a message."""


@route.command("explain")
@click.option(
    "--from",
    "sender",
    metavar="ADDRESS",
    help="Envelope sender (default: the file's From address, else <>).",
)
@click.option(
    "--to",
    "recipients",
    metavar="ADDRESS",
    multiple=True,
    required=True,
    help="A recipient; repeat for several.",
)
@click.option("--subject", help="The Subject (replaces the file's).")
@click.option("--source", metavar="USER", help="The AUTH user or API key that submits it.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.argument("file", type=click.File("rb"), required=False)
@config_option
@pass_app
def explain(
    app: AppContext,
    *,
    sender: str | None,
    recipients: tuple[str, ...],
    subject: str | None,
    source: str | None,
    as_json: bool,
    file: IO[bytes] | None,
) -> None:
    """Show the route each recipient of a message would take, the mailer chain in
    order, and which conditions decided it. FILE is a message (.eml; "-" for
    standard input) for header and body conditions."""
    data = file.read() if file is not None else b""
    message = OutboundMessage(
        id="explain",
        sender=_sender(sender, data),
        data=_with_subject(data, subject) if subject is not None else data,
        principal=source,
    )
    addresses = [str(parse_address(r)) for r in recipients]
    domains = app.run(lambda store: store.domains())
    table = RouteTable.from_settings(app.settings, domains)
    base = MessageView(message, addresses[0])
    explained = [table.explain(base.for_recipient(a)) for a in addresses]
    mailers = {m.name: m for m in app.settings.mailers}
    if as_json:
        emit_json([_json(e, mailers) for e in explained])
        return
    for index, explanation in enumerate(explained):
        if index:
            click.echo()
        _print(explanation, mailers)


def _sender(given: str | None, data: bytes) -> str:
    if given is None:
        header = BytesHeaderParser(policy=policy.default).parsebytes(data).get("From")
        given = email.utils.parseaddr(str(header))[1] if header is not None else ""
    if given in ("", "<>"):
        return ""
    return str(parse_address(given))


def _with_subject(data: bytes, subject: str) -> bytes:
    """``data`` with its Subject header (if any) replaced by ``subject``."""
    block = _HEADER_BLOCK.match(data)
    end = block.end() if block is not None else 0
    header = Header(subject, "us-ascii" if subject.isascii() else "utf-8").encode()
    line = f"Subject: {header}\r\n".encode("ascii")
    if not data:
        return line + b"\r\n"
    return line + _SUBJECT_LINES.sub(b"", data[:end]) + data[end:]


# -- text ----------------------------------------------------------------------------


def _print(explanation: Explanation, mailers: Mapping[str, AnyMailer]) -> None:
    print_fields(
        [
            ("Recipient", explanation.recipient),
            ("Route", explanation.route.name),
            ("Why", explanation.reason),
        ]
    )
    click.echo()
    rows = (
        (str(position), name, *_mailer_cells(mailers.get(name)))
        for position, name in enumerate(explanation.route.mailers, start=1)
    )
    print_table(("#", "Mailer", "Type", "Delivers to"), rows, empty="No mailers.")
    if explanation.checked:
        click.echo()
        click.echo("Routes checked, in order:")
        for check in explanation.checked:
            verdict = "matches" if check.result.matched else "does not match"
            click.echo(f"  {printable(check.route.name)}: {verdict}")
            for line in _group_lines(check.result, "    "):
                click.echo(line)


def _mailer_cells(mailer: AnyMailer | None) -> tuple[str, str]:
    if mailer is None:
        return ("?", "not configured")
    return (mailer.type, _target(mailer))


def _group_lines(result: GroupResult, indent: str) -> Iterator[str]:
    """A condition group as an indented tree, each line marked matched or not."""
    conditions = indent
    if len(result.conditions) > 1:
        yield f"{indent}{result.match.value} of these conditions:"
        conditions += "  "
    for condition in result.conditions:
        yield conditions + _condition_line(condition)
    for name, groups in (("all_of", result.all_of), ("any_of", result.any_of)):
        if groups:
            yield f"{indent}{_mark(_COMBINE[name](g.matched for g in groups))} {name}:"
        for group in groups:
            yield f"{indent}  {_mark(group.matched)} group:"
            yield from _group_lines(group, indent + "      ")
    if not (result.conditions or result.all_of or result.any_of):
        yield f"{indent}[x] no conditions: matches every message"


def _condition_line(result: ConditionResult) -> str:
    seen = ", ".join(repr(value) for value in result.seen[:3]) or "nothing"
    more = f" and {len(result.seen) - 3} more" if len(result.seen) > 3 else ""
    return printable(f"{_mark(result.matched)} {result.condition.text} (saw {seen}{more})")


def _mark(matched: bool) -> str:
    return "[x]" if matched else "[ ]"


# -- JSON ----------------------------------------------------------------------------


def _json(explanation: Explanation, mailers: Mapping[str, AnyMailer]) -> dict[str, object]:
    return {
        "recipient": explanation.recipient,
        "route": explanation.route.name,
        "default": explanation.is_default,
        "reason": explanation.reason,
        "mailers": [_mailer_json(name, mailers.get(name)) for name in explanation.route.mailers],
        "checked": [
            {"route": c.route.name, "matched": c.result.matched, **_group_json(c.result)}
            for c in explanation.checked
        ],
    }


def _mailer_json(name: str, mailer: AnyMailer | None) -> dict[str, object]:
    if mailer is None:
        return {"name": name, "type": None, "delivers_to": None}
    return {"name": name, "type": mailer.type, "delivers_to": _target(mailer)}


def _target(mailer: AnyMailer) -> str:
    """Where a mailer delivers; a provider API by its endpoint (never its key)."""
    described = _TARGETS.get(mailer.type)
    if described is not None:
        return described(mailer)
    return f"the {mailer.type} API at {getattr(mailer, 'base_url', '?')}"


def _group_json(result: GroupResult) -> dict[str, object]:
    return {
        "match": result.match.value,
        "conditions": [
            {"condition": c.condition.text, "matched": c.matched, "seen": list(c.seen)}
            for c in result.conditions
        ],
        "all_of": [{"matched": g.matched, **_group_json(g)} for g in result.all_of],
        "any_of": [{"matched": g.matched, **_group_json(g)} for g in result.any_of],
    }
