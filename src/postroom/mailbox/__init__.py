"""Local mail at rest: delivery into per-user mailboxes.

Input: a domain (A-labels), a user (lowercased local part), the message bytes as stored
(CRLF line endings) and the envelope facts. Output: the mailbox's name for the stored
message. Invariant: ``deliver`` returns only after the message is durable (file and
directory fsynced); a failure leaves nothing half-written where readers look.

``MailboxStore`` is the seam the local mailer (and later POP3 and IMAP) depend on, so a
store other than Maildir could replace it without touching them.
"""

from __future__ import annotations

from typing import Protocol

from postroom.mailbox.maildir import Maildir, check_folder_name

__all__ = ["MailboxStore", "Maildir", "check_folder_name"]


class MailboxStore(Protocol):
    async def deliver(
        self, domain: str, user: str, data: bytes, *, sender: str, recipient: str
    ) -> str:
        """Store ``data`` for ``user@domain``; return the stored message's name.

        Raises ``ValueError`` when ``domain`` or ``user`` cannot name a mailbox safely,
        and ``OSError`` for disk trouble (the caller decides temporary or permanent).
        """
        ...
