"""``postroom send``: queue a test message from the command line, and with ``--wait``
watch it to its delivery result.

The message is composed as the HTTP API composes its JSON form, queued straight into the
store through intake (source ``sendmail``, principal: the Unix user), and a running server
is woken to deliver it at once. ``--wait`` follows the message in the store and says each
attempt as it is recorded: exit 0 when all were delivered, 1 when any bounced (the remote
reply is shown), 75 (EX_TEMPFAIL) when some are still queued or deferred at
``--timeout``, or at once when nothing will try it meanwhile (no server, paused
delivery, a held message).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.text import Text

from postroom.cli import AppContext, config_option, fail, pass_app
from postroom.cli.render import print_table, printable, status_text
from postroom.cli.watch import Ended, Watched, watch
from postroom.clock import SystemClock
from postroom.delivery.tracking import route_tracking
from postroom.intake.compose import (
    Attachment,
    ComposeError,
    ComposeRequest,
    compose,
    parse_mailbox,
)
from postroom.intake.local import LocalResult, local_user, submit_local
from postroom.mail.envelope import Recipient
from postroom.net.control import NoAnswer, ask_status
from postroom.smtp.replies import Reply
from postroom.store import RecipientStatus, open_store

if TYPE_CHECKING:
    from postroom.config.settings import Settings

__all__ = ["send"]

EX_TEMPFAIL = 75


@click.command()
@click.option("--to", "to", multiple=True, required=True, metavar="ADDR", help="Repeatable.")
@click.option("--from", "sender", metavar="ADDR", help="Default: <unix user>@<hostname>.")
@click.option("--subject", default="postroom test message", show_default=True)
@click.option("--body", metavar="TEXT", help="The plain text body.")
@click.option(
    "--html", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="An HTML body."
)
@click.option(
    "--attach",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Attach a file (repeatable).",
)
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Tag its events (repeatable).")
@click.option(
    "--metadata",
    "metadata",
    multiple=True,
    metavar="KEY=VALUE",
    help="Metadata its events carry (repeatable).",
)
@click.option("--wait", is_flag=True, help="Wait for the delivery result and show it.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="With --wait: give up after this many seconds (exit 75).",
)
@config_option
@pass_app
def send(
    app: AppContext,
    *,
    to: tuple[str, ...],
    sender: str | None,
    subject: str,
    body: str | None,
    html: Path | None,
    attach: tuple[Path, ...],
    tags: tuple[str, ...],
    metadata: tuple[str, ...],
    wait: bool,
    timeout: float,
) -> None:
    """Send a test message: queue it here, and let the running server deliver it."""
    settings = app.settings
    user = local_user()
    html_text = html.read_text(encoding="utf-8") if html is not None else None
    if body is None and html_text is None:
        body = f"A test message from postroom on {settings.hostname}.\n"
    try:
        request = ComposeRequest(
            sender=parse_mailbox(sender or f"{user}@{settings.hostname}", "--from"),
            to=tuple(parse_mailbox(address, "--to") for address in to),
            subject=subject,
            text=body,
            html=html_text,
            attachments=tuple(_attachment(path) for path in attach),
            headers=_label_fields(tags, metadata),
        )
        message = compose(request, hostname=settings.hostname, now=time.time())
    except ComposeError as exc:
        fail(str(exc))
    result = asyncio.run(
        submit_local(
            settings,
            user=user,
            sender=message.sender,
            recipients=[Recipient(address) for address in message.recipients],
            data=message.data,
            body_type=message.body_type,
            smtputf8=message.smtputf8,
            route_tracking=route_tracking(settings),
        )
    )
    if isinstance(result, Reply):
        fail(f"refused: {_reply_text(result)}")
    click.echo(f"queued as {result.queue_id} (Message-ID {result.message_id})")
    if not result.woke_server:
        click.echo(f"no server is running for {settings.data_dir}: it is sent once one starts")
    if wait:
        raise click.exceptions.Exit(_wait(settings, result, timeout))


def _label_fields(tags: tuple[str, ...], metadata: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """``--tag`` and ``--metadata`` as the request fields intake reads from any message
    (``X-Postroom-Tag``, ``X-Postroom-Metadata``): checked there, as for SMTP mail."""
    fields = [("X-Postroom-Tag", tag) for tag in tags]
    pairs: dict[str, str] = {}
    for item in metadata:
        key, equals, value = item.partition("=")
        if not equals:
            fail(f"--metadata {item!r}: expected KEY=VALUE")
        pairs[key] = value
    if pairs:
        fields.append(("X-Postroom-Metadata", json.dumps(pairs)))
    return tuple(fields)


def _attachment(path: Path) -> Attachment:
    content_type, _ = mimetypes.guess_type(path.name)
    return Attachment(
        content=path.read_bytes(),
        content_type=content_type or "application/octet-stream",
        filename=path.name,
    )


def _reply_text(reply: Reply) -> str:
    return " ".join(w for w in (str(reply.code), reply.enhanced or "", *reply.lines) if w)


def _wait(settings: Settings, queued: LocalResult, timeout: float) -> int:
    """Follow the message to its result: 0 all delivered, 1 any bounced or expired, 75
    (EX_TEMPFAIL) when it still waits (no server delivers, paused or held delivery, or
    ``timeout``)."""
    # No server (already said), or one that is paused: nothing will be tried while we
    # wait, so say so now rather than at the timeout.
    paused = queued.woke_server and _delivery_paused(settings)
    if paused:
        click.echo("delivery is paused (delivery.paused): the message waits until it is not")
    blocked = paused or not queued.woke_server
    if blocked:
        timeout = 0.0
    watched = asyncio.run(_watch(settings, queued.queue_id, timeout))
    message = watched.message
    if message is None:
        fail(f"message {queued.queue_id} is no longer in the queue")
    if watched.ended is Ended.HELD:
        click.echo(
            f"message {message.id} is held: it is not tried until released"
            f" (postroom queue release {message.id})"
        )
    elif watched.ended is Ended.TIMEOUT and not blocked:
        click.echo(
            f"gave up waiting after {timeout:g} s; the server keeps trying"
            f" (postroom log show {message.id})"
        )
    rows = (
        (status_text(r.status), printable(r.address), Text(printable(r.last_reply or "")))
        for r in message.recipients
    )
    print_table(("Status", "Recipient", "Reply"), rows, empty="No recipients.")
    statuses = {r.status for r in message.recipients}
    if statuses & {RecipientStatus.BOUNCED, RecipientStatus.EXPIRED}:
        return 1
    if statuses == {RecipientStatus.DELIVERED}:
        return 0
    return EX_TEMPFAIL


def _delivery_paused(settings: Settings) -> bool:
    """Whether the running server was started with ``delivery.paused`` (the
    configuration's word when it does not answer)."""
    try:
        server = ask_status(settings.data_dir)
    except NoAnswer:
        server = None
    if server is None:
        return settings.delivery.paused
    return bool(server["delivery"]["paused"])


async def _watch(settings: Settings, queue_id: str, within: float) -> Watched:
    """Attempts as lines; on a terminal also a spinner saying what is awaited."""
    console = Console()
    spinner = console.status(f"waiting for {queue_id} to be delivered...")
    terminal = console.is_terminal
    store = await open_store(settings.storage_url)
    try:
        with spinner if terminal else contextlib.nullcontext():
            return await watch(
                store,
                queue_id,
                within=within,
                clock=SystemClock(),
                say=(lambda line: console.print(Text(line))) if terminal else click.echo,
                show=spinner.update if terminal else lambda _: None,
            )
    finally:
        await store.aclose()
