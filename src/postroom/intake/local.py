"""Local submission: a command on this machine (``postroom-sendmail``, ``postroom send``)
queues a whole message straight into the store, like Postfix's pickup.

The local user may relay, as Postfix trusts its maildrop: the message may go to any
domain. Its sender and author fields are held to the local user's sender rights
(``intake.principals.local_principal``: the local domains, the hostname and
``[senders.sendmail]``), and it is DKIM-signed as mail over SMTP is. After the commit, a
running server's scheduler is woken through the data directory's socket, so delivery
starts at once.
"""

from __future__ import annotations

import getpass
import os
import pwd
from collections.abc import Sequence
from dataclasses import dataclass

from postroom.clock import SystemClock
from postroom.config.settings import Settings
from postroom.intake.marks import RouteTracking
from postroom.intake.principals import local_principal
from postroom.intake.submission import Intake
from postroom.mail.address import Address
from postroom.mail.envelope import DsnRequest, Recipient, Source, SourceKind
from postroom.net.wakeup import notify
from postroom.smtp.replies import Reply
from postroom.store.instance import open_instance_store

__all__ = ["LocalResult", "local_user", "submit_local"]


@dataclass(frozen=True, slots=True)
class LocalResult:
    queue_id: str
    message_id: str | None
    woke_server: bool  # False: no server listened; it delivers at its next check


def local_user() -> str:
    """The Unix login name of this process (not $USER, which a caller can set)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid with no passwd entry, e.g. in a container
        return getpass.getuser()


async def submit_local(
    settings: Settings,
    *,
    user: str,
    sender: Address | None,
    recipients: Sequence[Recipient],
    data: bytes,
    dsn: DsnRequest | None = None,
    body_type: str = "7BIT",
    smtputf8: bool = False,
    route_tracking: RouteTracking | None,
) -> LocalResult | Reply:
    """Queue ``data`` durably, then wake the server: the queue id, or intake's refusal.
    Store problems raise (StoreError, OSError, sqlite3.Error): the caller keeps the mail."""
    # No new store here: mail queued where no server looks would wait forever.
    store = await open_instance_store(
        settings.storage_url,
        settings.data_dir,
        create=False,
        inline_body_max=settings.database.inline_body_max,
        database_timeout=settings.database.timeout,
    )
    try:
        intake = Intake.from_settings(settings, store, SystemClock(), route_tracking=route_tracking)
        result = await intake.submit(
            Source(kind=SourceKind.SENDMAIL, principal=user),
            sender,
            recipients,
            data,
            principal=local_principal(user, settings),
            dsn=dsn,
            body_type=body_type,
            smtputf8=smtputf8,
        )
    finally:
        await store.aclose()
    if isinstance(result, Reply):
        return result
    return LocalResult(result.queue_id, result.message_id, notify(settings.data_dir))
