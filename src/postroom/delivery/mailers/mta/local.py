"""The ``local`` mailer: delivery for our own domains into each user's mailbox.

Unknown users were already refused at RCPT (``intake.policy`` asks the directory), so
this mailer only stores. Each recipient ``user@domain`` gets its own copy (its own
``Delivered-To:``) in the mailbox named by the directory's lookup key: the local part
lowercased and the domain in A-labels. A local part that could not name one folder
safely (a ``/``, a leading ``.``, control characters) is refused with ``5.1.3``.

Disk trouble is temporary (the scheduler retries), as Postfix local(8) treats it. The
mailer never raises: every recipient gets exactly one ``Outcome``.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Final

from postroom.clock import Clock
from postroom.config.mailers import LocalMailerSettings
from postroom.delivery.message import OutboundMessage, OutboundRecipient
from postroom.delivery.outcome import Disposition, Outcome, RemoteInfo
from postroom.mailbox import Maildir, MailDrop, mailbox_key
from postroom.mailbox.base import QuotaExceeded
from postroom.smtp import replies
from postroom.smtp.replies import Reply

__all__ = [
    "DELIVERED",
    "DISK_ERRORS",
    "LOCAL_FAILURE",
    "UNSAFE_MAILBOX",
    "LocalMailer",
    "mailbox_key",
]

DELIVERED: Final = Reply(250, "2.0.0", "Delivered to maildir")
UNSAFE_MAILBOX: Final = replies.MAILBOX_NAME_NOT_ALLOWED
LOCAL_FAILURE: Final = Reply(451, "4.3.0", "Local delivery failed; will retry")

DISK_ERRORS: Final[Mapping[int, Reply]] = MappingProxyType(
    {
        errno.ENOSPC: Reply(452, "4.3.1", "Insufficient system storage"),
        errno.EDQUOT: Reply(452, "4.2.2", "Mailbox over quota"),
    }
)
"""``errno`` → reply for disk errors with their own enhanced code; others get 4.3.0."""

_DISPOSITIONS: Final[Mapping[int, Disposition]] = MappingProxyType(
    {2: Disposition.DELIVERED, 4: Disposition.DEFERRED, 5: Disposition.BOUNCED}
)


def _disk_error(exc: OSError) -> Reply:
    reply = DISK_ERRORS.get(exc.errno or 0, LOCAL_FAILURE)
    # strerror names the trouble without the path ("Permission denied"); the path would
    # reach the sender in a DSN.
    return reply.with_text(f"{reply.text}: {exc.strerror}") if exc.strerror else reply


class LocalMailer:
    """Implements ``Mailer``; ``mailbox`` defaults to Maildir under ``<data_dir>/mail``."""

    def __init__(
        self,
        settings: LocalMailerSettings,
        *,
        data_dir: Path,
        clock: Clock,
        mailbox: MailDrop | None = None,
    ) -> None:
        self.name = settings.name
        self._clock = clock
        self._mailbox = mailbox or Maildir(data_dir / "mail", clock=clock)

    async def deliver(
        self, message: OutboundMessage, recipients: Sequence[OutboundRecipient]
    ) -> list[Outcome]:
        return [await self._deliver_one(message, rcpt.address) for rcpt in recipients]

    async def aclose(self) -> None:
        return None

    async def _deliver_one(self, message: OutboundMessage, address: str) -> Outcome:
        started = self._clock.monotonic()
        reply, stored_as = await self._store(message, address)
        return Outcome(
            recipient=address,
            disposition=_DISPOSITIONS[reply.code // 100],
            reply=reply,
            remote=RemoteInfo(mailer=self.name, provider_id=stored_as),
            duration=max(0.0, self._clock.monotonic() - started),
        )

    async def _store(self, message: OutboundMessage, address: str) -> tuple[Reply, str | None]:
        try:
            domain, user = mailbox_key(address)
            name = await self._mailbox.deliver(
                domain, user, message.data, sender=message.sender, recipient=address
            )
        except QuotaExceeded:
            return replies.MAILBOX_FULL, None
        except ValueError:
            return UNSAFE_MAILBOX, None
        except OSError as exc:
            return _disk_error(exc), None
        except Exception as exc:  # the contract: outcomes, never exceptions
            return LOCAL_FAILURE.with_text(f"{LOCAL_FAILURE.text} ({type(exc).__name__})"), None
        return DELIVERED, name
